"""One way to serve an ASGI app: the gateway, the registry and the health endpoints use it.

:class:`HttpServer` runs an ASGI application on uvicorn, either in the foreground
(:meth:`run`, until SIGTERM or SIGINT: a server process such as ``streamfold gateway``) or on
a daemon thread (:meth:`start` / :meth:`stop`: beside a worker's loop, or in a test). Either
way uvicorn's own logging is off (streamfold logs with structlog), the access log is off, and
a stop lets requests in flight finish for ``graceful_s`` seconds. ``on_shutdown`` runs
first thing when a stop begins, on the event loop (the gateway answers its open waits
there, so they end within the grace period instead of being cut). ``port=0`` binds a free
port; :attr:`port` tells which once started. With ``tls=`` (a :class:`ServerTls`: PEM
certificate chain and key) it serves HTTPS instead of HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from streamfold.errors import ConfigurationError, HostEnvironmentError
from streamfold.observability.logging import get_logger

__all__ = ["HttpServer", "ServerTls"]

log = get_logger(__name__)

ASGIApp = Any


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate (PEM, its chain after it) and private key (PEM)."""

    certificate: Path
    key: Path

    @classmethod
    def of(cls, certificate: Path | None, key: Path | None, owner: str) -> ServerTls | None:
        """Both paths, or neither (plain HTTP); one without the other is an error."""
        if certificate is None and key is None:
            return None
        if certificate is None or key is None:
            raise ConfigurationError(f"{owner}: tls_certificate and tls_key go together")
        for path in (certificate, key):
            if not path.is_file():
                raise ConfigurationError(f"{owner}: TLS file {path} does not exist")
        return cls(certificate, key)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


class HttpServer:
    """Serve ``app`` on ``host:port`` (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        name: str,
        lifespan: str = "auto",
        graceful_s: float = 5.0,
        on_shutdown: Callable[[], None] | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.name = name
        self._host = host
        self._scheme = "https" if tls is not None else "http"
        self._socket = _bind(host, port, name)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan=lifespan,  # type: ignore[arg-type]  # uvicorn's Literal
            timeout_graceful_shutdown=int(graceful_s) or None,
            # A wait may hold a request for a minute; a stalled client must not hold more.
            timeout_keep_alive=30,
            # Nothing here reads the client's address; the middleware cost the gateway 7 %.
            proxy_headers=False,
            ssl_certfile=str(tls.certificate) if tls is not None else None,
            ssl_keyfile=str(tls.key) if tls is not None else None,
        )
        self._server = _Server(config, on_shutdown)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = self._host if self._host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{self._scheme}://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until SIGTERM or SIGINT."""
        log.info("http server listening", server=self.name, url=self.url)
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()
            log.info("http server stopped", server=self.name)

    def start(self, timeout: float = 30.0) -> None:
        """Serve on a daemon thread; return once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already started")
        # uvicorn installs signal handlers only on the main thread: a thread leaves them.
        thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise HostEnvironmentError(f"{self.name} did not start on {self.url}")
            time.sleep(0.01)
        log.debug("http server listening", server=self.name, url=self.url)

    def stop(self) -> None:
        """Stop serving (requests in flight get the grace period) and join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._server.should_exit = True
        thread.join()
        self._socket.close()
        log.debug("http server stopped", server=self.name)

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(host: str, port: int, name: str) -> socket.socket:
    """Bind the listening socket now, so a busy port fails here with a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HostEnvironmentError(f"{name} cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
