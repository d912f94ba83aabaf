"""HTTP endpoints for Kubernetes probes and Prometheus scrapes.

:class:`HealthServer` serves, on a daemon thread of the worker process:

- ``GET /metrics``: a process's metrics (a worker's
  :class:`~streamfold.observability.metrics.WorkerMetrics`, a sink's metrics);
- ``GET /healthz``: liveness, ``200 {"status": "alive"}`` or ``503 {"status": "not alive"}``;
- ``GET /readyz``: readiness, ``200 {"status": "ready"}`` or ``503 {"status": "not ready"}``;
- anything else: ``404``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol

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


class _ProbeHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that carries what the request handler answers from."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Renders,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.alive = alive
        super().__init__(address, _ProbeHandler)


class _ProbeHandler(BaseHTTPRequestHandler):
    """Answer one request from the state held by its :class:`_ProbeHTTPServer`."""

    server: _ProbeHTTPServer
    # A stalled client must not hold a handler thread for ever.
    timeout = 10

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE, self.server.metrics.render())
        elif path == "/healthz":
            self._probe(self.server.alive, "alive")
        elif path == "/readyz":
            self._probe(self.server.ready, "ready")
        else:
            self._send(HTTPStatus.NOT_FOUND, _JSON, b'{"status":"not found"}')

    def _probe(self, check: Callable[[], bool], state: str) -> None:
        try:
            ok = check()
        except Exception:
            # A probe that cannot answer is a failing probe, not a 500 with a traceback.
            log.exception("probe check raised", probe=state)
            ok = False
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        body = {"status": state if ok else f"not {state}"}
        self._send(status, _JSON, json.dumps(body, separators=(",", ":")).encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", client=self.client_address[0], line=format % args)


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
        self._server: _ProbeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """Return the bound port; raises :class:`RuntimeError` before :meth:`start`."""
        if self._server is None:
            raise RuntimeError("health server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind the socket and serve on a daemon thread; raises if already started."""
        if self._server is not None:
            raise RuntimeError("health server is already started")
        server = _ProbeHTTPServer(
            (self._host, self._requested_port), self._metrics, self._ready, self._alive
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"health-server-{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        log.info("health server listening", host=self._host, port=self.port)

    def stop(self) -> None:
        """Stop serving, close the socket and join the serving thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None
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
