"""Events and state records decoded by ClickHouse: the sink's fast path.

Decoding Avro and building columns in Python costs the sink about 12 µs a row; ClickHouse
reads Avro in C++ at a fraction of that. So for the events and state topics the sink does
not decode records: per record it frames the Avro body (the bytes after the Confluent
header) behind a few fixed fields taken from the Kafka record (offset, timestamp,
partition, and the tenant, key, version, command id and deleted headers as raw bytes),
which is about 3 µs. The binary encoding of an Avro record is the concatenation of its
fields', so a framed row *is* an Avro record of the writer's schema with those fields put
in front (:func:`framed_schema`), and the rows of one writer schema make one Avro object
container file. ClickHouse inserts the batch with one statement:

.. code-block:: sql

    INSERT INTO db.table (columns) SELECT * FROM (
        SELECT <expressions> FROM file('part0.avro', 'Avro', '<structure>')  -- chDB
        UNION ALL SELECT … FROM file('part1.avro', …)                       -- one per schema
    ) SETTINGS insert_deduplication_token = '…'

(against a server over HTTP the files travel as external data, ``FROM _sf_part0``). The
expressions (:class:`WriterPlan`) produce exactly the row the Python path
(:mod:`streamfold.sink.rows`) would: head columns from the framed fields, a typed column
per model field (``NULL`` or the type's empty value where the writer lacks the field or
writes ``null`` into a column that cannot hold it), and for events the ``payload`` JSON with
:func:`~streamfold.sink.types.json_text`'s conventions (sorted keys; decimals, UUIDs and dates
as strings; timestamps in ISO 8601 with ``+00:00``). One difference: header values are
stored as their bytes, where the Python path decodes them with replacement characters (the
two agree on UTF-8, which is all the platform writes); and ClickHouse spells U+2028 and U+2029
in a payload string as ``\u2028`` and ``\u2029`` (the same JSON value).

Not every writer schema qualifies (:attr:`WriterPlan.eligible`): nested records, unions
other than ``["null", T]``, floats in a payload (their JSON spelling differs), decimals of
scale above 6 or precision above 28 in a payload, and a few other types keep the Python
path; a batch holding any such record goes the Python path whole, as does a batch
ClickHouse refuses (a corrupt body, say): same rows, same deduplication token, so the choice
can never double a batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec, CodecError
from streamfold.contracts.compiled import encode_long
from streamfold.sink.batches import Ack, Pending
from streamfold.sink.ddl import TableSpec
from streamfold.sink.types import Column, FileType, file_type, is_identifier, named_types

__all__ = ["AvroPart", "Framer", "WriterPlan", "container", "framed_schema", "sql_string"]

_MAGIC = 0
_HEADER = 5
_SYNC = b"streamfold.sink!"  # any 16 bytes; one marker per file
_PREFIX = "__sf_"
#: The fields a framed row puts before the writer's, in order: (name, Avro type, ClickHouse).
_FRAME: tuple[tuple[str, Any, str], ...] = (
    ("__sf_offset", {"type": "fixed", "name": "__sf_u64", "size": 8}, "FixedString(8)"),
    ("__sf_time", "__sf_u64", "FixedString(8)"),
    ("__sf_partition", {"type": "fixed", "name": "__sf_u32", "size": 4}, "FixedString(4)"),
    ("__sf_tenant", "string", "String"),
    ("__sf_key", "string", "String"),
    ("__sf_version", "string", "String"),
    ("__sf_command_id", "string", "String"),
    ("__sf_deleted", "string", "String"),
)
_TIME = "fromUnixTimestamp64Milli(reinterpretAsInt64(`__sf_time`), 'UTC')"
_HEAD: dict[str, str] = {
    "tenant": "`__sf_tenant`",
    "aggregate_id": "`__sf_key`",
    "version": "toUInt64OrZero(`__sf_version`)",
    "deleted": "toUInt8(`__sf_deleted` = 'true')",
    "updated_at": _TIME,
    "event_time": _TIME,
    "command_id": "`__sf_command_id`",
    "_partition": "reinterpretAsUInt32(`__sf_partition`)",
    "_offset": "reinterpretAsUInt64(`__sf_offset`)",
}
_TENANT, _VERSION, _COMMAND_ID, _DELETED = h.TENANT, h.AGGREGATE_VERSION, h.COMMAND_ID, "deleted"


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """A zig-zag varint of a non-negative int at ``at``; returns it and where it ends."""
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value >> 1, at
        shift += 7


#: The varint lengths of the strings a frame holds, precomputed up to 4 KiB.
_LENGTHS = [encode_long(n) for n in range(4096)]


def sql_string(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return f"`{name}`"


def framed_schema(writer: Mapping[str, Any]) -> dict[str, Any]:
    """The Avro schema of a framed row: the frame's fields, then the writer's."""
    fields = [{"name": name, "type": avro} for name, avro, _ch in _FRAME]
    return {**writer, "fields": [*fields, *writer["fields"]]}


# --- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriterPlan:
    """How ClickHouse turns framed rows of one writer schema into one table's rows."""

    schema_id: int
    record_name: str
    eligible: bool
    header: bytes = b""  # the container file's header
    structure: str = ""  # the file's columns, as ``file(…, 'Avro', structure)`` takes them
    select: str = ""  # the SELECT list: one expression per column of the table, in order
    why: str = ""  # when not eligible


def writer_plan(
    schema_id: int,
    writer: Mapping[str, Any],
    table: TableSpec,
    *,
    event_type: str | None = None,
    topic: str = "",
) -> WriterPlan:
    """The plan of ``writer``'s records into ``table`` (its model columns by name)."""
    name = str(writer.get("name", ""))
    if writer.get("type") != "record":
        return WriterPlan(schema_id, name, False, why="not a record schema")
    named: dict[str, Any] = {}
    named_types(dict(writer), None, named)
    fields: dict[str, FileType] = {}
    for field in writer["fields"]:
        field_name = field.get("name")
        if not is_identifier(field_name):
            return WriterPlan(schema_id, name, False, why=f"field name {field_name!r}")
        if field_name.startswith(_PREFIX):
            return WriterPlan(schema_id, name, False, why=f"field {field_name} is reserved")
        typed = file_type(field["type"], named)
        if typed is None:
            return WriterPlan(schema_id, name, False, why=f"field {field_name}'s type")
        fields[field_name] = typed
    model = {c.name for c in table.model_columns}
    expressions = []
    for column in table.columns:
        expression = _expression(column, column.name in model, fields, event_type, topic)
        if expression is None:
            return WriterPlan(schema_id, name, False, why=f"column {column.name}")
        expressions.append(expression)
    frame = [f"{_ident(n)} {ch}" for n, _avro, ch in _FRAME]
    structure = ", ".join([*frame, *(f"{_ident(n)} {t.clickhouse}" for n, t in fields.items())])
    return WriterPlan(
        schema_id,
        name,
        True,
        header=_container_header(framed_schema(writer)),
        structure=structure,
        # Positional aliases: two columns with the same expression stay two columns.
        select=", ".join(f"{e} AS `{_PREFIX}c{i}`" for i, e in enumerate(expressions)),
    )


def _expression(
    column: Column,
    model: bool,
    fields: Mapping[str, FileType],
    event_type: str | None,
    topic: str,
) -> str | None:
    """The SELECT expression of one column; None if the plan cannot fill it."""
    if not model:  # the table's own columns
        if column.name == "payload":
            return None if event_type is None else _payload(fields)
        if column.name == "event_type":
            return None if event_type is None else sql_string(event_type)
        if column.name == "_topic":
            return sql_string(topic)
        return _HEAD.get(column.name)
    typed = fields.get(column.name)
    if typed is None:  # the writer lacks it: NULL, or the type's empty value
        return f"defaultValueOfTypeName({sql_string(column.type)})"
    if typed.clickhouse.startswith("Nullable(") and not column.type.startswith("Nullable("):
        return f"ifNull({_ident(column.name)}, defaultValueOfTypeName({sql_string(column.type)}))"
    return _ident(column.name)


def _payload(fields: Mapping[str, FileType]) -> str | None:
    parts = []
    for index, name in enumerate(sorted(fields)):
        spelled = fields[name].json
        if spelled is None:
            return None
        key = ("," if index else "") + json.dumps(name) + ":"
        parts += [sql_string(key), spelled.format(x=_ident(name))]
    return "concat(" + ", ".join([sql_string("{"), *parts, sql_string("}")]) + ")"


# --- files ------------------------------------------------------------------------------------


def _container_header(schema: Mapping[str, Any]) -> bytes:
    text = json.dumps(schema, separators=(",", ":")).encode()
    meta = [(b"avro.schema", text), (b"avro.codec", b"null")]
    out = [b"Obj\x01", encode_long(len(meta))]
    for key, value in meta:
        out += [encode_long(len(key)), key, encode_long(len(value)), value]
    return b"".join([*out, b"\x00", _SYNC])


def container(plan: WriterPlan, rows: Sequence[bytes]) -> bytes:
    """An Avro object container file of framed rows: one block."""
    body = b"".join(rows)
    return b"".join((plan.header, encode_long(len(rows)), encode_long(len(body)), body, _SYNC))


@dataclass(frozen=True, slots=True)
class AvroPart:
    """One container file of a batch and how its rows become the table's."""

    data: bytes
    structure: str
    select: str


# --- framing ----------------------------------------------------------------------------------


class Framer:
    """Frames the records of one source topic into a :class:`Pending`, per writer schema.

    ``accepts`` maps the record full names the topic's tables take to their event type
    (None for a state topic: any record, no event type). ``tables`` are the tables the rows
    go to (one plan per table and writer schema). ``acks`` (a state topic): the aggregate
    type to ack accepted commands with.
    """

    def __init__(
        self,
        codec: AvroCodec,
        tables: Sequence[TableSpec],
        topic: str,
        accepts: Mapping[str, str] | None,
        acks: str | None = None,
    ) -> None:
        self._codec = codec
        self._tables = tuple(tables)
        self._topic = topic
        self._accepts = accepts
        self._acks = acks
        self._plans: dict[int, tuple[WriterPlan, ...] | None] = {}

    def plans(self, schema_id: int) -> tuple[WriterPlan, ...] | None:
        """The plans (one per table) of a writer schema; None if the topic's tables do not
        take its records (the Python path skips them too)."""
        if schema_id in self._plans:
            return self._plans[schema_id]
        try:
            writer = self._codec.writer_schema(schema_id)
        except CodecError:
            self._plans[schema_id] = None
            return None
        name = str(writer.get("name", ""))
        full = name if "." in name else f"{writer.get('namespace', '')}.{name}".lstrip(".")
        event_type = None
        if self._accepts is not None:
            if full not in self._accepts:
                self._plans[schema_id] = None
                return None
            event_type = self._accepts[full]
        plans = tuple(
            writer_plan(schema_id, writer, t, event_type=event_type, topic=self._topic)
            for t in self._tables
        )
        self._plans[schema_id] = plans
        return plans

    def build(self, message: Message, offset: int, pending: Pending) -> bool:
        """Frame one record into ``pending``; False if its tables take nothing from it."""
        value = message.value()
        if not value or len(value) < _HEADER or value[0] != _MAGIC:
            return False
        schema_id = int.from_bytes(value[1:_HEADER], "big")
        try:
            plans = self._plans[schema_id]
        except KeyError:
            plans = self.plans(schema_id)
        if plans is None:
            return False
        if not plans[0].eligible:
            pending.python = True
        headers: dict[str, bytes] = dict(message.headers() or ())  # type: ignore[arg-type]
        get = headers.get  # a broker's header values are bytes
        key = message.key() or b""
        tenant = get(_TENANT) or b""
        version = get(_VERSION) or b""
        command_id = get(_COMMAND_ID) or b""
        deleted = get(_DELETED) or b""
        stamp = message.timestamp()[1]
        head = (
            offset.to_bytes(8, "little")
            + (stamp if stamp and stamp > 0 else 0).to_bytes(8, "little")
            + (message.partition() or 0).to_bytes(4, "little")
        )
        try:
            row = b"".join(
                (
                    head,
                    _LENGTHS[len(tenant)],
                    tenant,
                    _LENGTHS[len(key)],
                    key,
                    _LENGTHS[len(version)],
                    version,
                    _LENGTHS[len(command_id)],
                    command_id,
                    _LENGTHS[len(deleted)],
                    deleted,
                    value[_HEADER:],
                )
            )
        except IndexError:  # a string longer than the precomputed lengths
            parts = (tenant, key, version, command_id, deleted)
            row = head + b"".join(encode_long(len(p)) + p for p in parts) + value[_HEADER:]
        frames = pending.frames.get(schema_id)
        if frames is None:
            frames = pending.frames[schema_id] = []
        frames.append(row)
        pending.framed += 1
        if self._acks is not None and command_id:
            pending.acks.append(
                Ack(
                    command_id.decode("utf-8", "replace"),
                    self._acks,
                    key.decode("utf-8", "replace"),
                    int(version or b"0"),
                    "accepted",
                )
            )
        return True

    def messages(self, pending: Pending) -> list[Message]:
        """The records ``pending`` framed, rebuilt from their frames (for the Python path):
        the same offsets, partition, key, timestamp, value and the headers a row reads (an
        empty header reads as an absent one), in offset order."""
        rebuilt = []
        for schema_id, rows in pending.frames.items():
            header = bytes([_MAGIC]) + schema_id.to_bytes(4, "big")
            for row in rows:
                offset = int.from_bytes(row[0:8], "little")
                millis = int.from_bytes(row[8:16], "little")
                partition = int.from_bytes(row[16:20], "little")
                at = 20
                values = []
                for _ in range(5):
                    length, at = _read_varint(row, at)
                    values.append(row[at : at + length])
                    at += length
                tenant, key, version, command_id, deleted = values
                headers: list[tuple[str, str | bytes | None]] = [
                    (name, value)
                    for name, value in (
                        (_TENANT, tenant),
                        (_VERSION, version),
                        (_COMMAND_ID, command_id),
                        (_DELETED, deleted),
                    )
                    if value
                ]
                rebuilt.append(
                    Message(
                        topic=self._topic,
                        partition=partition,
                        offset=offset,
                        key=key,
                        value=header + row[at:],
                        headers=headers,
                        timestamp=(1, millis),
                    )
                )
        rebuilt.sort(key=lambda m: m.offset() or 0)
        return rebuilt

    def parts(self, members: Sequence[Pending], table: int) -> list[AvroPart] | None:
        """The container files of ``members``' rows for table number ``table`` (one per
        writer schema, rows in member order); None if a row needs the Python path."""
        if any(m.python for m in members):
            return None
        schema_ids = sorted({s for m in members for s in m.frames})
        parts = []
        for schema_id in schema_ids:
            plans = self._plans.get(schema_id)
            if plans is None:
                return None
            plan = plans[table]
            if not plan.eligible:
                return None
            rows = [row for m in members for row in m.frames.get(schema_id, ())]
            parts.append(AvroPart(container(plan, rows), plan.structure, plan.select))
        return parts
