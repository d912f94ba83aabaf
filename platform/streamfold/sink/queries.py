"""SQL against a sink's target while the sink runs: the query port.

chDB lets one process own a path at a time, and a running sink owns its path. So a sink on a
chDB target also answers queries on a local port (127.0.0.1 only), and records where in a
file beside the path (``<path>.sink.json``: its pid and URL). :func:`run_sql` (behind
``streamfold sql``) asks that port when the file names a live process, and opens the target
itself otherwise; a ClickHouse server target is always queried directly.
"""

from __future__ import annotations

import json
import os
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

import psutil

from streamfold.errors import RetryableError
from streamfold.observability.logging import get_logger
from streamfold.sink.target import (
    ClickHouseTarget,
    TargetError,
    TargetUnavailableError,
    chdb_path,
)

__all__ = ["QueryServer", "discovery_file", "jsonable", "run_sql"]

log = get_logger(__name__)

Result = tuple[list[str], list[Sequence[Any]]]


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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        received = self.rfile.read(length)
        parameters: dict[str, Any] | None = None
        settings: dict[str, Any] | None = None
        if self.headers.get("Content-Type") == "application/json":
            request = json.loads(received)
            sql, parameters, settings = request["sql"], request["parameters"], request["settings"]
        else:
            sql = received.decode()
        try:
            columns, rows = self.server.target.query(sql, parameters, settings)
            body = json.dumps({"columns": columns, "rows": jsonable([list(r) for r in rows])})
            status = HTTPStatus.OK
        except TargetError as exc:
            body, status = json.dumps({"error": str(exc)}), HTTPStatus.BAD_REQUEST
        except RetryableError as exc:  # the target is down for now: say so, not "bad query"
            body, status = json.dumps({"error": str(exc)}), HTTPStatus.SERVICE_UNAVAILABLE
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("query port", request=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: ClickHouseTarget) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.target = target


class QueryServer:
    """Serve queries on the target of a running sink (see the module docstring)."""

    def __init__(self, target: ClickHouseTarget) -> None:
        self._server = _Server(target)
        self._file = discovery_file(target.target)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sink-query-port", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> None:
        self._thread.start()
        if self._file is not None:
            self._file.write_text(json.dumps({"pid": os.getpid(), "url": self.url}))

    def stop(self) -> None:
        if self._file is not None:
            self._file.unlink(missing_ok=True)
        self._server.shutdown()
        self._server.server_close()


def _running_sink(target: str) -> str | None:
    path = discovery_file(target)
    if path is None or not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return str(found["url"]) if psutil.pid_exists(int(found["pid"])) else None


def run_sql(
    target: str,
    database: str,
    sql: str,
    *,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    **credentials: Any,
) -> Result:
    """Run ``sql`` on ``target``: through a running sink's query port, or directly.

    ``parameters`` and ``settings`` as :meth:`ClickHouseTarget.query` takes them; through
    the query port they travel as JSON beside the statement.
    """
    url = _running_sink(target)
    if url is not None:
        if parameters is None and settings is None:
            request = urllib.request.Request(url, data=sql.encode(), method="POST")
        else:
            data = json.dumps(
                {"sql": sql, "parameters": parameters, "settings": settings}, default=str
            ).encode()
            request = urllib.request.Request(
                url, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read()).get("error", str(exc))
            if exc.code == HTTPStatus.SERVICE_UNAVAILABLE:
                raise TargetUnavailableError(error) from exc
            raise TargetError(error) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TargetUnavailableError(
                f"the sink's query port at {url} did not answer: {exc}"
            ) from exc
        return answer["columns"], answer["rows"]
    clickhouse = ClickHouseTarget(target, database, **credentials)
    try:
        return clickhouse.query(sql, parameters, settings)
    finally:
        clickhouse.close()
