"""The routes' caller dependency: the lane's verified caller, else a credential checked
there (served without the lane, the app never falls open)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from streamfold.gateway.app import current_caller
from streamfold.gateway.auth import Authenticator, Caller
from streamfold.gateway.problems import ProblemError
from streamfold.gateway.settings import AuthMode, GatewaySettings

pytestmark = pytest.mark.unit


def request(headers: dict[str, str], **scope: object) -> Request:
    settings = GatewaySettings(auth=AuthMode.API_KEY, api_keys=SecretStr("k1=tenant-a:ann"))
    app = SimpleNamespace(state=SimpleNamespace(authenticator=Authenticator(settings)))
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "app": app, **scope})


def test_the_lanes_verified_caller_is_taken() -> None:
    verified = Caller("tenant-b", "bob")
    taken = asyncio.run(current_caller(request({}, **{"streamfold.caller": verified})))
    assert taken is verified


def test_without_the_lane_the_credential_is_checked_here() -> None:
    assert asyncio.run(current_caller(request({"X-API-Key": "k1"}))) == Caller("tenant-a", "ann")
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        with pytest.raises(ProblemError) as refused:
            asyncio.run(current_caller(request(headers)))
        assert refused.value.problem.status == 401
