"""Every listener streamfold opens binds 127.0.0.1 unless it is told otherwise."""

from __future__ import annotations

import inspect
import os

import pytest

from streamfold.cli.sink import sink
from streamfold.gateway.settings import GatewaySettings
from streamfold.registry.server import RegistryServerSettings
from streamfold.runtime.settings import WorkerSettings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMFOLD_"):
            monkeypatch.delenv(name)


def test_the_settings_default_to_the_loopback_address() -> None:
    assert WorkerSettings().health_host == "127.0.0.1"
    assert GatewaySettings().host == "127.0.0.1"
    assert RegistryServerSettings().host == "127.0.0.1"


def test_the_sink_health_server_defaults_to_the_loopback_address() -> None:
    default = inspect.signature(sink).parameters["health_host"].default
    assert default == "127.0.0.1"
