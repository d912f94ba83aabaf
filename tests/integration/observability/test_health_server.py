"""The health server on a real socket, requested over HTTP with urllib."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import structlog

from streamfold.observability.health import HealthServer
from streamfold.observability.logging import configure_logging
from streamfold.observability.metrics import WorkerMetrics

pytestmark = pytest.mark.integration


def get(server: HealthServer, path: str) -> tuple[int, str, bytes]:
    """Request ``path`` and return the status, content type and body, errors included."""
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


class Flag:
    def __init__(self, value: bool) -> None:
        self.value = value

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def ready() -> Flag:
    return Flag(False)


@pytest.fixture
def server(metrics: WorkerMetrics, ready: Flag) -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1", 0, metrics, ready=ready) as running:
        yield running


def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    assert server.port > 0


def test_metrics_route_serves_the_worker_metrics(
    server: HealthServer, metrics: WorkerMetrics
) -> None:
    metrics.command("Order", "accepted", n=3)

    status, content_type, body = get(server, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b'streamfold_worker_commands_total{aggregate="Order",outcome="accepted"} 3.0' in body


def test_readiness_flips_from_503_to_200(server: HealthServer, ready: Flag) -> None:
    status, content_type, body = get(server, "/readyz")
    assert (status, json.loads(body)) == (503, {"status": "not ready"})
    assert content_type == "application/json"

    ready.value = True

    status, _, body = get(server, "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})


def test_liveness_defaults_to_alive(server: HealthServer) -> None:
    status, _, body = get(server, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "alive"})


def test_liveness_failing_or_raising_answers_503(metrics: WorkerMetrics) -> None:
    def broken() -> bool:
        raise RuntimeError("state store unreachable")

    for alive in (Flag(False), broken):
        with HealthServer("127.0.0.1", 0, metrics, ready=Flag(True), alive=alive) as server:
            status, _, body = get(server, "/healthz")
            assert (status, json.loads(body)) == (503, {"status": "not alive"})


def test_unknown_route_is_404(server: HealthServer) -> None:
    status, _, _ = get(server, "/nope")
    assert status == 404


def test_stop_releases_the_port_and_joins_the_thread(metrics: WorkerMetrics) -> None:
    server = HealthServer("127.0.0.1", 0, metrics, ready=Flag(True))
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    server.start()
    port = server.port
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    serving = {t.name for t in threading.enumerate()}
    assert f"health-server-{port}" in serving

    server.stop()
    server.stop()  # idempotent

    assert f"health-server-{port}" not in {t.name for t in threading.enumerate()}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    # The port is free again: a new server can bind it.
    with HealthServer("127.0.0.1", port, metrics, ready=Flag(True)) as again:
        assert get(again, "/healthz")[0] == 200


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("level", "logged"), [("INFO", False), ("DEBUG", True)])
def test_requests_are_logged_at_debug_only(
    metrics: WorkerMetrics, capsys: pytest.CaptureFixture[str], level: str, logged: bool
) -> None:
    configure_logging("json", level)
    with HealthServer("127.0.0.1", 0, metrics, ready=Flag(True)) as server:
        for path in ("/metrics", "/healthz", "/readyz"):
            assert get(server, path)[0] == 200

    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert "health server listening" in events
    assert ("http request" in events) is logged
