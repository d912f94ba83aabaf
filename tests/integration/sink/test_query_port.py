"""The sink's query port lets in only its own user's CLI, and runs reads read-only.

A real chDB target behind a real port: each door of the port is tried the way a hostile
local process or web page would, and must stay shut; then the CLI's own ways in must work.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfold.sink.queries import QueryLimits, QueryServer, discovery_file, run_sql
from streamfold.sink.target import ClickHouseTarget, TargetError

pytestmark = pytest.mark.integration


@pytest.fixture
def port(tmp_path: Path) -> Iterator[QueryServer]:
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "default")
    target.command("CREATE TABLE default.notes (n Int64) ENGINE = MergeTree ORDER BY n")
    server = QueryServer(target, QueryLimits(max_result_rows=1_000))
    server.start()
    yield server
    server.stop()
    target.close()


def post(
    server: QueryServer,
    body: bytes,
    *,
    path: str = "query",
    token: str | None = None,
    content_type: str = "application/json",
    **headers: str,
) -> tuple[int, dict[str, Any]]:
    sent = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server.url + path, data=body, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def sql(statement: str, **more: Any) -> bytes:
    return json.dumps({"sql": statement, **more}).encode()


def streamfold(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streamfold", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def target_of(server: QueryServer, tmp_path: Path) -> str:
    return f"chdb:{tmp_path / 'ch'}"


def test_the_discovery_file_holds_a_token_only_its_user_can_read(
    port: QueryServer, tmp_path: Path
) -> None:
    found = discovery_file(target_of(port, tmp_path))
    assert found is not None
    assert stat.S_IMODE(found.stat().st_mode) == 0o600
    assert json.loads(found.read_text())["token"] == port.token
    assert len(port.token) >= 32


def test_without_the_token_nothing_runs(port: QueryServer) -> None:
    assert post(port, sql("SELECT 1"))[0] == 401
    assert post(port, sql("SELECT 1"), token="wrong")[0] == 401
    assert post(port, sql("SELECT 1"), token="wröng")[0] == 401  # not a 500
    status, answer = post(port, sql("SELECT 1"), token=port.token)
    assert (status, answer["rows"]) == (200, [[1]])


def test_a_web_page_cannot_reach_it(port: QueryServer) -> None:
    # A text/plain POST needs no CORS preflight: today's port ran it as SQL.
    status, _ = post(port, b"DROP TABLE default.notes", content_type="text/plain")
    assert status in (401, 415)
    status, answer = post(port, b"SELECT 1", token=port.token, content_type="text/plain")
    assert status == 415, answer
    origin = {"Origin": "http://example.com"}
    status, answer = post(port, sql("SELECT 1"), token=port.token, **origin)
    assert status == 403, answer
    rebound = {"Host": "attacker.example:80"}  # a DNS-rebound name
    status, answer = post(port, sql("SELECT 1"), token=port.token, **rebound)
    assert status == 403, answer
    with pytest.raises(urllib.error.HTTPError) as get:
        urllib.request.urlopen(port.url + "query", timeout=30)
    assert get.value.code == 405
    assert post(port, sql("SELECT count() FROM default.notes"), token=port.token)[0] == 200


def test_an_oversized_body_is_refused_before_it_is_read(port: QueryServer) -> None:
    host, number = port.url.removeprefix("http://").rstrip("/").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(number)), timeout=10) as connection:
        connection.sendall(
            b"POST /query HTTP/1.1\r\nHost: " + f"{host}:{number}".encode() + b"\r\n"
            b"Authorization: Bearer " + port.token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        )
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413"), answer
    assert time.monotonic() - started < 5


def test_invalid_json_names_the_field(port: QueryServer) -> None:
    status, answer = post(port, b"{not json", token=port.token)
    assert status == 400
    status, answer = post(port, json.dumps({"sql": 1}).encode(), token=port.token)
    assert status == 400
    assert "sql" in answer["error"]
    status, answer = post(port, json.dumps({"sql": "SELECT 1", "x": 2}).encode(), token=port.token)
    assert status == 400
    assert "x" in answer["error"]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
        "CREATE TABLE default.evil (a Int8) ENGINE = Memory",
        "DROP TABLE default.notes",
        "INSERT INTO default.notes VALUES (1)",
        "INSERT INTO FUNCTION file('/tmp/streamfold-evil.csv', 'CSV') SELECT 1",
        "SELECT 1 SETTINGS readonly = 0",
        "/* a comment first */ DROP TABLE default.notes",
        "  (DROP TABLE default.notes)",
        "WITH 1 AS a INSERT INTO default.notes SELECT a",
        "SELECT 1; DROP TABLE default.notes",
        "SET readonly = 0",
        "OPTIMIZE TABLE default.notes",
    ],
)
def test_a_read_cannot_write_or_reach_outside(port: QueryServer, statement: str) -> None:
    status, answer = post(port, sql(statement), token=port.token)
    assert status == 400, answer
    # Nothing was left behind: the sink's own session still writes, and the table is there.
    status, answer = post(
        port, sql("INSERT INTO default.notes VALUES (7)"), path="admin", token=port.token
    )
    assert status == 200, answer
    status, answer = post(port, sql("SELECT count() FROM default.notes"), token=port.token)
    assert (status, answer["rows"]) == (200, [[1]])


def test_reads_have_limits(port: QueryServer) -> None:
    status, answer = post(port, sql("SELECT number FROM numbers(100000)"), token=port.token)
    assert status == 400
    assert "limit" in answer["error"].lower()
    big = sql("SELECT number FROM numbers(100000)", settings={"max_result_rows": 10**9})
    assert post(port, big, token=port.token)[0] == 400  # a caller cannot raise the cap
    cut = sql(
        "SELECT number FROM numbers(100000)",
        settings={"max_result_rows": 10, "result_overflow_mode": "break"},
    )
    status, answer = post(port, cut, token=port.token)
    assert status == 200
    assert 10 <= len(answer["rows"]) < 100000


def test_the_cli_reads_through_the_port_and_writes_only_when_told(
    port: QueryServer, tmp_path: Path
) -> None:
    target = target_of(port, tmp_path)
    with pytest.raises(TargetError, match="read-only query"):
        run_sql(target, "default", "INSERT INTO default.notes VALUES (1)")
    run_sql(target, "default", "INSERT INTO default.notes VALUES (1), (2)", write=True)
    assert run_sql(target, "default", "SELECT sum(n) FROM default.notes") == (["sum(n)"], [[3]])
    refused = streamfold("sql", "DROP TABLE default.notes", "--target", target)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: ") and "--write" in line
    written = streamfold(
        "sql", "INSERT INTO default.notes VALUES (4)", "--target", target, "--write"
    )
    assert written.returncode == 0, written.stderr
    assert run_sql(target, "default", "SELECT count() FROM default.notes")[1] == [[3]]
