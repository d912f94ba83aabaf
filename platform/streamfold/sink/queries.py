"""SQL against a sink's target while the sink runs: the query port.

chDB lets one process own a path at a time, and a running sink owns its path. So a sink on a
chDB target also answers queries on a local port (127.0.0.1 only), and records where in a
file beside the path (``<path>.sink.json``, mode 0600: its pid, URL and token).
:func:`run_sql` (behind ``streamfold sql``) asks that port when the file names a live
process, and opens the target itself otherwise; a ClickHouse server target is always queried
directly.

The port is a door into the sink's process, so it lets in only its own user's CLI:

- every request carries the token from the discovery file (``Authorization: Bearer``);
  only the sink's user can read that file;
- only ``POST`` of ``application/json``, and no ``Origin`` header and a ``Host`` that is
  the port's own: a web page cannot reach it (a browser sends ``Origin`` on a cross-origin
  POST, and a ``text/plain`` one needs no preflight), nor can a DNS-rebound name;
- a body over :attr:`QueryLimits.max_body_bytes` is refused before it is read;
- ``/query`` runs the statement read-only (chDB: ``readonly=1``, which also refuses the
  ``file()``, ``url()`` and ``remote()`` table functions; ``readonly=2`` would allow them)
  with ``max_execution_time`` and ``max_result_rows``; only ``/admin``, which
  ``streamfold sql --write`` uses, may write.

A read is one ``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``, ``EXPLAIN`` or ``EXISTS``
statement that does not name ``INSERT``; anything else is refused before it reaches chDB.
clickhouse-connect applies the settings of an INSERT or a DDL statement with ``SET`` and
restores them afterwards, which fails once ``readonly`` is set and would leave the sink's
own session read-only.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from clickhouse_connect.driver.query import remove_sql_comments
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamfold.errors import RetryableError
from streamfold.observability.logging import get_logger
from streamfold.sink.target import (
    ClickHouseTarget,
    TargetError,
    TargetUnavailableError,
    chdb_path,
)

__all__ = [
    "QueryLimits",
    "QueryServer",
    "discovery_file",
    "jsonable",
    "read_settings",
    "run_sql",
]

log = get_logger(__name__)

Result = tuple[list[str], list[Sequence[Any]]]

_INSERT = re.compile(r"(?<![\w$])insert(?![\w$])", re.IGNORECASE)
#: The statements a read may be; clickhouse-connect sends each of them with a trailing
#: SETTINGS clause, so ``readonly`` holds for that statement only.
_READ = re.compile(r"^[\s(]*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS)\b", re.IGNORECASE)


class QueryLimits(BaseModel):
    """What one query may cost (the query port's, and a direct read's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Seconds a query may run (ClickHouse ``max_execution_time``).
    max_execution_time: int = Field(default=60, ge=1)
    #: Rows a read may return (``max_result_rows``; more is an error, not a silent cut,
    #: unless the caller asks for ``result_overflow_mode=break`` under a lower cap).
    max_result_rows: int = Field(default=1_000_000, ge=1)
    #: Largest request body the query port reads.
    max_body_bytes: int = Field(default=1 << 20, ge=1024)


class _QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None


def read_settings(
    target: str, requested: dict[str, Any] | None, limits: QueryLimits
) -> dict[str, Any]:
    """The settings a read runs with: the caller's, read-only, within ``limits``."""
    settings = dict(requested or {})
    rows = int(settings.get("max_result_rows") or limits.max_result_rows)
    seconds = float(settings.get("max_execution_time") or limits.max_execution_time)
    settings["max_result_rows"] = min(rows, limits.max_result_rows)
    settings["max_execution_time"] = min(seconds, limits.max_execution_time)
    settings.setdefault("result_overflow_mode", "throw")
    # readonly=2 lets a query change settings but, on chDB, also read any file of the
    # process with file(): chDB gets 1. A server's table functions need grants its DBA
    # controls; readonly=1 there would refuse these very limits.
    settings["readonly"] = 1 if target.startswith("chdb:") else 2
    return settings


def check_read(sql: str) -> None:
    """Refuse a read that is not one, before it runs (see the module docstring)."""
    statement = remove_sql_comments(sql)
    if _INSERT.search(statement) or not _READ.match(statement):
        raise TargetError(
            "a read-only query is one SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS"
            " statement and cannot INSERT; `streamfold sql --write` runs statements that write"
        )


def discovery_file(target: str) -> Path | None:
    path = chdb_path(target)
    return path.with_name(path.name + ".sink.json") if path is not None else None


def jsonable(value: Any) -> Any:
    """A query's value as JSON can carry it (dates as ISO 8601, decimals as strings)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


class _Refused(Exception):
    """A request the port does not run; ``status`` and ``message`` are the answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        try:
            status, answer = HTTPStatus.OK, self._answer()
        except _Refused as refused:
            status, answer = refused.status, {"error": refused.message}
        except TargetError as exc:
            status, answer = HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        except RetryableError as exc:  # the target is down for now: say so, not "bad query"
            status, answer = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
        self._send(status, answer)

    def do_GET(self) -> None:  # other methods get the base class's 501
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only POST"}, allow="POST")

    def _answer(self) -> dict[str, Any]:
        path = urlsplit(self.path).path
        if path not in ("/query", "/admin"):
            raise _Refused(HTTPStatus.NOT_FOUND, f"no {path}: POST /query or /admin")
        if self.headers.get("Origin") is not None:
            raise _Refused(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")
        if self.headers.get("Host") not in self.server.hosts:
            raise _Refused(HTTPStatus.FORBIDDEN, "Host must be this port's own address")
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        expected = self.server.token.encode()
        given = token.strip().encode("utf-8", errors="replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise _Refused(HTTPStatus.UNAUTHORIZED, "a token from the sink's .sink.json is needed")
        if self.headers.get_content_type() != "application/json":
            raise _Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"
            )
        request = self._request()
        if path == "/admin":
            return self._run(request.sql, request.parameters, request.settings)
        check_read(request.sql)
        target = self.server.target
        settings = read_settings(target.target, request.settings, self.server.limits)
        return self._run(request.sql, request.parameters, settings)

    def _request(self) -> _QueryRequest:
        length = self.headers.get("Content-Length")
        if length is None:
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not length.isdigit():
            raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
        if int(length) > self.server.limits.max_body_bytes:
            self.close_connection = True  # the body is never read
            raise _Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body may have at most {self.server.limits.max_body_bytes} bytes",
            )
        try:
            return _QueryRequest.model_validate_json(self.rfile.read(int(length)))
        except ValidationError as exc:
            fields = ", ".join(
                ".".join(str(p) for p in error["loc"]) or "body" for error in exc.errors()
            )
            raise _Refused(HTTPStatus.BAD_REQUEST, f"invalid request ({fields}): {exc}") from exc

    def _run(
        self, sql: str, parameters: dict[str, Any] | None, settings: dict[str, Any] | None
    ) -> dict[str, Any]:
        columns, rows = self.server.target.query(sql, parameters, settings)
        return {"columns": columns, "rows": jsonable([list(r) for r in rows])}

    def _send(self, status: HTTPStatus, answer: dict[str, Any], **headers: str) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", "Bearer")
        for name, value in headers.items():
            self.send_header(name.title(), value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("query port", request=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: ClickHouseTarget, limits: QueryLimits) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.target = target
        self.limits = limits
        self.token = secrets.token_urlsafe(32)
        port = self.server_address[1]
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}


class QueryServer:
    """Serve queries on the target of a running sink (see the module docstring)."""

    def __init__(self, target: ClickHouseTarget, limits: QueryLimits | None = None) -> None:
        self._server = _Server(target, limits or QueryLimits())
        self._file = discovery_file(target.target)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sink-query-port", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def token(self) -> str:
        return self._server.token

    def start(self) -> None:
        self._thread.start()
        if self._file is not None:
            found = {"pid": os.getpid(), "url": self.url, "token": self.token}
            _write_private(self._file, json.dumps(found))

    def stop(self) -> None:
        if self._file is not None:
            self._file.unlink(missing_ok=True)
        self._server.shutdown()
        self._server.server_close()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (0600 from its creation)."""
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(staging, path)


def _running_sink(target: str) -> tuple[str, str] | None:
    """The URL and token of the query port of a live sink on ``target``, if one runs."""
    path = discovery_file(target)
    if path is None or not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
        pid, url, token = int(found["pid"]), str(found["url"]), str(found["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # gone meanwhile, or written by an older sink: open the target itself
    return (url, token) if psutil.pid_exists(pid) else None


def run_sql(
    target: str,
    database: str,
    sql: str,
    *,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    write: bool = False,
    limits: QueryLimits | None = None,
    **credentials: Any,
) -> Result:
    """Run ``sql`` on ``target``: through a running sink's query port, or directly.

    ``parameters`` and ``settings`` as :meth:`ClickHouseTarget.query` takes them; through
    the query port they travel as JSON beside the statement. A read (the default) runs
    read-only within ``limits``, wherever it runs; ``write=True`` lets the statement write.
    """
    limits = limits or QueryLimits()
    if not write:
        check_read(sql)
        settings = read_settings(target, settings, limits)
    running = _running_sink(target)
    if running is not None:
        url, token = running
        data = json.dumps(
            {"sql": sql, "parameters": parameters, "settings": settings}, default=str
        ).encode()
        request = urllib.request.Request(
            url + ("admin" if write else "query"),
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=limits.max_execution_time + 30) as answer:
                found = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            error = _error_of(exc)
            if exc.code == HTTPStatus.SERVICE_UNAVAILABLE:
                raise TargetUnavailableError(error) from exc
            raise TargetError(error) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TargetUnavailableError(
                f"the sink's query port at {url} did not answer: {exc}"
            ) from exc
        return found["columns"], found["rows"]
    clickhouse = ClickHouseTarget(target, database, **credentials)
    try:
        return clickhouse.query(sql, parameters, settings)
    finally:
        clickhouse.close()


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"the sink's query port answered {exc.code} {exc.reason}"
