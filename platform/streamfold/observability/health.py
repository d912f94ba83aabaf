"""HTTP endpoints for Kubernetes probes and Prometheus scrapes.

:class:`HealthServer` serves, on a daemon thread of a worker or sink process (uvicorn, through
:class:`~streamfold.http.server.HttpServer`, as the gateway and the registry are served):

- ``GET /metrics``: a process's metrics (a worker's
  :class:`~streamfold.observability.metrics.WorkerMetrics`, a sink's metrics);
- ``GET /healthz``: liveness, ``200 {"status": "alive"}`` or ``503 {"status": "not alive"}``;
- ``GET /readyz``: readiness, ``200 {"status": "ready"}`` or ``503 {"status": "not ready"}``;
- anything else: ``404``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol

from streamfold.http.server import HttpServer
from streamfold.observability.logging import get_logger
from streamfold.observability.metrics import CONTENT_TYPE

__all__ = ["HealthServer"]

log = get_logger(__name__)

_JSON = "application/json"


class Renders(Protocol):
    """Metrics that render themselves in the Prometheus text format."""

    def render(self) -> bytes: ...


def _always() -> bool:
    return True


class _ProbeApp:
    """The ASGI application of the probes and the metrics."""

    def __init__(
        self, metrics: Renders, ready: Callable[[], bool], alive: Callable[[], bool]
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.alive = alive

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        path = scope["path"]
        log.debug("http request", client=(scope.get("client") or ("",))[0], path=path)
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, HTTPStatus.METHOD_NOT_ALLOWED, _JSON, b'{"status":"not allowed"}')
        elif path == "/metrics":
            await _send(send, HTTPStatus.OK, CONTENT_TYPE, self.metrics.render())
        elif path == "/healthz":
            await self._probe(send, self.alive, "alive")
        elif path == "/readyz":
            await self._probe(send, self.ready, "ready")
        else:
            await _send(send, HTTPStatus.NOT_FOUND, _JSON, b'{"status":"not found"}')

    async def _probe(self, send: Any, check: Callable[[], bool], state: str) -> None:
        try:
            ok = check()
        except Exception:
            # A probe that cannot answer is a failing probe, not a 500 with a traceback.
            log.exception("probe check raised", probe=state)
            ok = False
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        body = {"status": state if ok else f"not {state}"}
        await _send(send, status, _JSON, json.dumps(body, separators=(",", ":")).encode())


async def _send(send: Any, status: HTTPStatus, content_type: str, body: bytes) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": int(status), "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HealthServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread.

    Nothing is bound until :meth:`start`; :meth:`stop` closes the socket and joins the thread,
    and is safe to call more than once. Use it as a context manager to pair the two. ``ready``
    and ``alive`` are called from handler threads on every probe, so they must be cheap and
    thread-safe; a check that raises answers 503 and is logged. Pass ``port=0`` to bind a free
    port and read it from :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Renders,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = _always,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._metrics = metrics
        self._ready = ready
        self._alive = alive
        self._server: HttpServer | None = None

    @property
    def port(self) -> int:
        """Return the bound port; raises :class:`RuntimeError` before :meth:`start`."""
        if self._server is None:
            raise RuntimeError("health server is not started")
        return self._server.port

    def start(self) -> None:
        """Bind the socket and serve on a daemon thread; raises if already started."""
        if self._server is not None:
            raise RuntimeError("health server is already started")
        app = _ProbeApp(self._metrics, self._ready, self._alive)
        server = HttpServer(
            app,
            self._host,
            self._requested_port,
            name="health-server",
            lifespan="off",
            graceful_s=1,
        )
        server.start()
        self._server = server
        log.info("health server listening", host=self._host, port=self.port)

    def stop(self) -> None:
        """Stop serving, close the socket and join the serving thread."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            log.info("health server stopped", host=self._host)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
