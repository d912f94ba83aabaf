"""The store a sink projects into: the :class:`SinkTarget` seam, and its ClickHouse target.

:class:`SinkTarget` is all the sink's loop (:mod:`streamfold.sink.connector`) asks of a
target: create the tables, tell whether a batch's range landed, insert a batch once under
its token. Every target passes one conformance suite
(``tests/integration/sink/test_target_conformance.py``): :class:`ClickHouseTarget` on chDB
(and on a server, given ``STREAMFOLD_TEST_CLICKHOUSE_URL``) and the in-memory
:class:`~streamfold.sink.recording.RecordingTarget`.

:class:`ClickHouseTarget` is one clickhouse-connect client for chDB and for servers.

``chdb:path`` (relative to the working directory), ``chdb:///abs/path`` or ``chdb://memory``
select chDB, the ClickHouse engine in this process (one process may own a chDB path at a
time); ``http(s)://host:port`` selects a ClickHouse server. The same calls serve both.

Errors split at this edge: a target that cannot be reached, answers that it is overloaded
or shutting down, or (chDB) whose path another process owns, is
:class:`TargetUnavailableError` (retryable: the sink backs off and tries the same batch
again); anything else (a bad statement, a type mismatch) is :class:`TargetError`
(permanent).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError
from clickhouse_connect.driver.external import ExternalData

from streamfold.errors import PermanentError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.sink.arrow import ArrowConversionError, arrow_schema, arrow_table
from streamfold.sink.ddl import TableSpec
from streamfold.sink.passthrough import AvroPart, sql_string
from streamfold.sink.types import quoted_identifier

__all__ = [
    "ClickHouseTarget",
    "SinkTarget",
    "TargetError",
    "TargetUnavailableError",
    "chdb_path",
    "redacted",
]

log = get_logger(__name__)

_UNKNOWN = object()
_SECRET_PARAMETERS = frozenset({"password", "access_token", "token"})

# Server error codes that mean "try again": TOO_MANY_SIMULTANEOUS_QUERIES, TIMEOUT_EXCEEDED,
# NETWORK_ERROR, SOCKET_TIMEOUT, TOO_MANY_PARTS, ABORTED, TABLE_IS_READ_ONLY,
# ALL_CONNECTION_TRIES_FAILED, KEEPER_EXCEPTION.
_RETRYABLE_CODES = (
    "Code: 202",
    "Code: 159",
    "Code: 210",
    "Code: 209",
    "Code: 252",
    "Code: 236",
    "Code: 242",
    "Code: 279",
    "Code: 999",
)


class TargetError(PermanentError):
    """ClickHouse refused a statement for good."""


class TargetUnavailableError(RetryableError):
    """ClickHouse cannot be reached right now."""


def redacted(target: str) -> str:
    """``target`` fit for a log line or an error: a password in the URL shown as ``***``."""
    parts = urlsplit(target)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(k.lower() in _SECRET_PARAMETERS for k, _ in query):
        return target
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    hidden = [(k, "***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(hidden, safe="*")))


def chdb_path(target: str) -> Path | None:
    """The chDB directory of a ``chdb:`` target (None for ``chdb://memory`` or a server)."""
    if not target.startswith("chdb:"):
        return None
    rest = target[len("chdb:") :]
    if rest.startswith("//"):
        rest = rest[2:]
        if not rest.startswith("/"):  # chdb://memory[/db]
            return None
    return Path(rest).resolve()


class SinkTarget(Protocol):
    """What a sink needs of the store it projects into.

    An insert is atomic and idempotent under its token: a batch inserted again with the
    same token (a sink that restarted between the insert and its commit) is dropped, so a
    replayed batch never doubles a row. Errors are :class:`TargetUnavailableError` (the
    sink backs off and tries the same batch again) or :class:`TargetError` (permanent).
    """

    database: str
    #: Whether :meth:`insert_avro` is supported; if not, every batch is decoded in Python.
    decodes_avro: bool

    def describe(self) -> str:
        """The target's address for a log line, with no credential in it."""
        ...

    def ensure(self, tables: Sequence[TableSpec], extra_sql: Sequence[str] = ()) -> list[str]:
        """Create the database and the missing ``tables``, add the columns they have gained
        (returned as ``table.column``); ``extra_sql``: statements such a target understands
        (views), which another kind of target may keep without running."""
        ...

    def holds(self, table: TableSpec, topic: str, partition: int, first: int, last: int) -> bool:
        """Whether ``table`` has a row from ``topic``/``partition`` at an offset in
        ``[first, last]``: an insert of that range landed."""
        ...

    def insert_columns(
        self, table: TableSpec, columns: Sequence[Sequence[Any]], token: str
    ) -> None:
        """Insert the rows of ``columns`` (one sequence per column of ``table``) once."""
        ...

    def insert_avro(self, table: TableSpec, parts: Sequence[AvroPart], token: str) -> None:
        """Insert framed Avro rows once (:mod:`streamfold.sink.passthrough`), decoded by the
        target itself (only where :attr:`decodes_avro`)."""
        ...

    def close(self) -> None: ...


class ClickHouseTarget:
    """Create the tables, insert batches with a deduplication token, run queries.

    Thread-safe: one lock serialises the client (a sink inserts from its loop while its query
    port answers ``streamfold sql``).
    """

    decodes_avro = True  # ClickHouse reads the framed rows itself (insert_avro)

    def __init__(
        self, target: str, database: str, username: str | None = None, password: str | None = None
    ) -> None:
        self.target = target
        self.database = database
        self._username = username
        self._password = password
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._arrow_schemas: dict[TableSpec, Any] = {}

    def describe(self) -> str:
        return redacted(self.target)

    # ------------------------------------------------------------------ connection

    def _connect(self) -> Client:
        if self._client is not None:
            return self._client
        try:
            path = chdb_path(self.target)
            if self.target.startswith("chdb:"):
                if path is not None:
                    path.mkdir(parents=True, exist_ok=True)
                    client = clickhouse_connect.get_client(interface="chdb", path=str(path))
                else:
                    client = clickhouse_connect.get_client(dsn=self.target)
            else:
                client = clickhouse_connect.get_client(
                    dsn=self.target,
                    username=self._username or "default",
                    password=self._password or "",
                )
        except Exception as exc:  # clickhouse-connect raises its own and plain errors
            raise _translate(exc, f"connecting to {redacted(self.target)}") from exc
        self._client = client
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------ statements

    def command(self, sql: str) -> Any:
        with self._lock:
            try:
                return self._connect().command(sql)
            except ClickHouseError as exc:
                self._reset_if_down(exc)
                raise _translate(exc, "running a statement") from exc

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """Run a query; return its column names and rows.

        ``parameters`` bind ClickHouse's ``{name:Type}`` placeholders (server-side: the
        values never become SQL text); ``settings`` are per-query settings (limits,
        ``readonly``).
        """
        with self._lock:
            try:
                result = self._connect().query(sql, parameters=parameters, settings=settings)
            except ClickHouseError as exc:
                self._reset_if_down(exc)
                raise _translate(exc, "running a query") from exc
            return list(result.column_names), list(result.result_rows)

    def holds(self, table: TableSpec, topic: str, partition: int, first: int, last: int) -> bool:
        """Whether ``table`` has a row from ``topic``/``partition`` at an offset in
        ``[first, last]``: an insert of that range landed (an insert is atomic)."""
        sql = (
            f"SELECT count() FROM {table.qualified(self.database)} WHERE _topic = %(topic)s"
            f" AND _partition = {int(partition)} AND _offset BETWEEN {int(first)} AND {int(last)}"
        )
        with self._lock:
            try:
                result = self._connect().query(sql, parameters={"topic": topic})
            except ClickHouseError as exc:
                self._reset_if_down(exc)
                raise _translate(exc, f"reading {table.name}") from exc
            return bool(result.result_rows[0][0])

    def ensure(self, tables: Sequence[TableSpec], extra_sql: Sequence[str] = ()) -> list[str]:
        """Create the database and missing tables; add columns a model has gained; make
        the tables' Arrow schemas (the first one costs pyarrow's import of pandas, about
        0.3 s: better spent here than on the first batch's way to its PROJECTED acks).

        Returns the columns added (``table.column``), for the log.
        """
        database = quoted_identifier(self.database, "database")  # before any SQL runs
        self.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        added: list[str] = []
        for table in tables:
            self.command(table.create_sql(self.database))
            _names, rows = self.query(
                "SELECT name FROM system.columns "
                "WHERE database = {database:String} AND table = {table:String}",
                {"database": self.database, "table": table.name},
            )
            present = {row[0] for row in rows}
            for column in table.columns:
                if column.name not in present:
                    self.command(table.add_column_sql(self.database, column))
                    added.append(f"{table.name}.{column.name}")
            self._arrow_schema(table)
        for sql in extra_sql:
            self.command(sql)
        return added

    def insert(self, table: TableSpec, rows: Sequence[Sequence[Any]], token: str) -> None:
        """Insert ``rows`` (values in ``table.columns`` order) once: see :meth:`insert_columns`."""
        if rows:
            self.insert_columns(table, [list(c) for c in zip(*rows, strict=True)], token)

    def insert_columns(
        self, table: TableSpec, columns: Sequence[Sequence[Any]], token: str
    ) -> None:
        """Insert the rows of ``columns`` (one sequence per column of ``table``, in order)
        once: a retry with the same ``token`` is dropped by ClickHouse's insert
        deduplication.

        The rows go in as an Arrow table (:mod:`streamfold.sink.arrow`) when every column
        type has an Arrow type and pyarrow takes the values, else in the Native format with
        the column types from the table's spec (the table is created or altered to it first,
        which spares clickhouse-connect a ``DESCRIBE TABLE`` round trip per insert). Either
        way one insert statement carries the token, so the choice cannot double a batch.
        """
        if not columns or not columns[0]:
            return
        schema = self._arrow_schema(table)
        arrow = None
        if schema is not None:
            try:
                arrow = arrow_table(schema, columns)
            except ArrowConversionError as exc:
                log.warning("inserting in the Native format", table=table.name, reason=str(exc))
        settings = {"insert_deduplication_token": token}
        with self._lock:
            try:
                client = self._connect()
                if arrow is not None:
                    client.insert_arrow(
                        table.name, arrow, database=self.database, settings=settings
                    )
                else:
                    client.insert(
                        table.name,
                        columns,
                        column_names=[c.name for c in table.columns],
                        column_type_names=[c.type for c in table.columns],
                        column_oriented=True,
                        database=self.database,
                        settings=settings,
                    )
            except ClickHouseError as exc:
                self._reset_if_down(exc)
                raise _translate(exc, f"inserting into {table.name}") from exc

    def _arrow_schema(self, table: TableSpec) -> Any:
        schema = self._arrow_schemas.get(table, _UNKNOWN)
        if schema is _UNKNOWN:
            schema = self._arrow_schemas[table] = arrow_schema(table)
        return schema

    def insert_avro(self, table: TableSpec, parts: Sequence[AvroPart], token: str) -> None:
        """Insert the rows of Avro container files once, decoded by ClickHouse
        (:mod:`streamfold.sink.passthrough`): one ``INSERT … SELECT`` over every part, with
        the deduplication token, so the batch lands whole or not at all, as one block.

        chDB reads each part from a temporary file (``file()``); a server receives them as
        the query's external data (``_sf_part0``, …), in the same request.
        """
        if not parts:
            return
        columns = ", ".join(f"`{c.name}`" for c in table.columns)
        settings = ", ".join(
            (
                f"insert_deduplication_token = {sql_string(token)}",
                "output_format_json_escape_forward_slashes = 0",
            )
        )

        def statement(sources: Sequence[str]) -> str:
            selects = " UNION ALL ".join(
                f"SELECT {part.select} FROM {source}"
                for part, source in zip(parts, sources, strict=True)
            )
            return (
                f"INSERT INTO {table.qualified(self.database)} ({columns}) "
                f"SELECT * FROM ({selects}) SETTINGS {settings}"
            )

        with self._lock:
            try:
                client = self._connect()
                if self.target.startswith("chdb:"):
                    with tempfile.TemporaryDirectory(prefix="streamfold-sink-") as directory:
                        sources = []
                        for index, part in enumerate(parts):
                            path = Path(directory) / f"part{index}.avro"
                            path.write_bytes(part.data)
                            sources.append(
                                f"file({sql_string(str(path))}, 'Avro', "
                                f"{sql_string(part.structure)})"
                            )
                        client.command(statement(sources))
                else:
                    external = ExternalData(
                        file_name="_sf_part0",
                        data=parts[0].data,
                        fmt="Avro",
                        structure=parts[0].structure,
                    )
                    for index, part in enumerate(parts[1:], start=1):
                        external.add_file(
                            file_name=f"_sf_part{index}",
                            data=part.data,
                            fmt="Avro",
                            structure=part.structure,
                        )
                    names = [f"_sf_part{index}" for index in range(len(parts))]
                    client.command(statement(names), external_data=external)
            except (ClickHouseError, OSError) as exc:  # OSError: writing a part's file
                self._reset_if_down(exc)
                raise _translate(exc, f"inserting into {table.name}") from exc

    def _reset_if_down(self, exc: BaseException) -> None:
        if isinstance(_translate(exc, ""), TargetUnavailableError) and self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def _translate(exc: BaseException, doing: str) -> Exception:
    text = str(exc)
    busy = "Unable to open the chdb engine" in text  # another process owns the path
    if busy or isinstance(exc, OperationalError) or any(c in text for c in _RETRYABLE_CODES):
        return TargetUnavailableError(f"ClickHouse unavailable while {doing}: {text[:500]}")
    if isinstance(exc, DatabaseError | ClickHouseError):
        return TargetError(f"ClickHouse refused {doing}: {text[:1000]}")
    if isinstance(exc, OSError | ConnectionError):
        return TargetUnavailableError(f"ClickHouse unavailable while {doing}: {text[:500]}")
    return TargetError(f"{doing} failed: {text[:1000]}")
