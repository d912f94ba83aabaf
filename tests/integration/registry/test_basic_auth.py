"""The registry's basic auth: a refusal is always a 401, whatever the header holds."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

USER, PASSWORD = "ops", "pässwörd-✓"  # a non-ASCII password, as UTF-8 in the header


def basic(credentials: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


REFUSED = [
    {},
    basic(b"ops:wrong"),
    basic("ops:pässwörd-✗".encode()),  # non-ASCII and wrong: once a 500 (TypeError)
    basic("öps:pässwörd-✓".encode()),  # an unknown non-ASCII user
    basic(b"ops"),  # no colon
    basic(b"\xff\xfe:\x80"),  # not UTF-8
    {"Authorization": "Basic not*base64"},
    {"Authorization": "Basic " + base64.b64encode(b"ops:x").decode() + "=="},
    {"Authorization": "Bearer " + PASSWORD.encode().hex()},
    {"Authorization": "Basic"},
]


def test_bad_credentials_are_a_401_and_the_right_ones_pass(
    schema_registry_factory: Callable[..., Any],
) -> None:
    secured = schema_registry_factory(auth=(USER, PASSWORD))
    answers = [
        httpx.get(f"{secured.url}/subjects", headers=headers, timeout=30).status_code
        for headers in REFUSED
    ]
    assert answers == [401] * len(REFUSED)
    right = basic(f"{USER}:{PASSWORD}".encode())
    answer = httpx.get(f"{secured.url}/subjects", headers=right, timeout=30)
    assert answer.status_code == 200, answer.text
