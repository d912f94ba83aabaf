"""Two registry processes on one topic, registering concurrently under shared subjects."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from streamfold.contracts.compatibility import (
    CompatibilityLevel,
    check_compatibility,
    parse_schema,
)
from streamfold.testing.pytest_plugin import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBJECTS = 8
LEVELS = [
    CompatibilityLevel.BACKWARD,
    CompatibilityLevel.FULL,
    CompatibilityLevel.BACKWARD_TRANSITIVE,
    CompatibilityLevel.FORWARD,
]


def http(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def candidate_schemas(rng: random.Random, count: int) -> list[str]:
    """Schemas of one record, some mutually compatible and some not (types flip, fields
    appear with and without defaults), so that the order of registration decides."""
    schemas = []
    for _ in range(count):
        fields: list[dict[str, Any]] = [
            {"name": "id", "type": rng.choice(["string", "string", "string", "long"])}
        ]
        for extra in rng.sample(range(6), rng.randint(0, 3)):
            field: dict[str, Any] = {"name": f"f{extra}", "type": "int"}
            if rng.random() < 0.8:
                field["default"] = 0
            fields.append(field)
        schemas.append(json.dumps({"type": "record", "name": "Thing", "fields": fields}))
    return schemas


def dump(url: str) -> dict[str, list[tuple[int, int, str]]]:
    """Every subject's live versions as (version, id, schema)."""
    status, subjects = http(url, "GET", "/subjects")
    assert status == 200
    state = {}
    for subject in subjects:
        versions = http(url, "GET", f"/subjects/{subject}/versions")[1]
        state[subject] = []
        for version in versions:
            answer = http(url, "GET", f"/subjects/{subject}/versions/{version}")[1]
            state[subject].append((answer["version"], answer["id"], answer["schema"]))
    return state


def test_two_replicas_register_concurrently(
    schema_registry_factory: Any, test_scale: float
) -> None:
    first = schema_registry_factory()
    second = schema_registry_factory(topic=first.topic)
    urls = [first.url, second.url]
    rng = random.Random(7)
    subjects = [f"shared.things-{n}-value" for n in range(SUBJECTS)]
    for n, subject in enumerate(subjects):
        level = LEVELS[n % len(LEVELS)]
        status, _ = http(urls[n % 2], "PUT", f"/config/{subject}", {"compatibility": level})
        assert status == 200
    total = scaled(200, test_scale, minimum=40)
    pool = candidate_schemas(rng, 40)
    jobs = [(urls[i % 2], rng.choice(subjects), rng.choice(pool)) for i in range(total)]

    def register(job: tuple[str, str, str]) -> tuple[str, str, int, Any]:
        url, subject, schema = job
        status, answer = http(url, "POST", f"/subjects/{subject}/versions", {"schema": schema})
        return subject, schema, status, answer

    with ThreadPoolExecutor(max_workers=16) as executor:
        results = list(executor.map(register, jobs))

    assert {status for *_, status, _ in results} <= {200, 409}, results
    accepted = [(s, schema, a) for s, schema, status, a in results if status == 200]
    assert accepted, "no registration was accepted"
    # Ids: one per distinct schema, never one id for two schemas.
    id_of: dict[str, int] = {}
    schema_of: dict[int, str] = {}
    for _subject, schema, answer in accepted:
        key = json.dumps(json.loads(schema), sort_keys=True)
        assert id_of.setdefault(key, answer["id"]) == answer["id"]
        assert schema_of.setdefault(answer["id"], key) == key

    state = dump(first.url)
    assert state == dump(second.url)
    for n, subject in enumerate(subjects):
        held = state.get(subject, [])
        # Versions contiguous.
        assert [v for v, _, _ in held] == list(range(1, len(held) + 1))
        # Every version compatible under the subject's level with those before it.
        level = LEVELS[n % len(LEVELS)]
        parsed = [(v, parse_schema(text)) for v, _, text in held]
        for index in range(1, len(parsed)):
            problems = check_compatibility(level, parsed[index][1], parsed[:index])
            assert problems == [], (subject, index, problems)
    # No lost registration: every accepted answer is in the served state.
    served = {(subject, v, i) for subject, rows in state.items() for v, i, _ in rows}
    for subject, _schema, answer in accepted:
        assert (subject, answer["version"], answer["id"]) in served

    first.restart()
    second.restart()
    assert dump(first.url) == state
    assert dump(second.url) == state
