"""Records of an aggregate's topics to rows of its projection tables, column by column.

One builder per source topic; for one Kafka record it appends the row's values to the columns
of a :class:`~streamfold.sink.batches.Pending` (in the table's column order,
:mod:`streamfold.sink.ddl`, ``_topic`` and ``_partition`` left to the batch) and the
PROJECTED ack the record allows, if any; it returns False when the record projects nothing
(undecodable: the worker dead-lettered it). Typed columns come from the model's Avro schema
(the reader's view): a record written with an older schema lacks a newer optional field,
which becomes NULL (or empty).

The events and state builders are the sink's hot path: for each record type they are
generated as Python source (:class:`_RowSource`), one ``append`` per column with the field,
its converter and the headers spelled out, so a row costs no loop over a column plan, no
header dict of decoded strings and no row list. The results and commands builders (one row
per command) stay plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message
from pydantic import BaseModel

from streamfold.contracts import headers as h
from streamfold.contracts.avro import avro_schema, full_name
from streamfold.contracts.codec import AvroCodec, CodecError, RecordReader
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.sink.batches import Ack, Pending
from streamfold.sink.ddl import TableSpec
from streamfold.sink.types import column_plan, json_bytes, json_text

__all__ = ["Ack", "RowBuilder", "builders_for", "row_width"]

_EPOCH = datetime.fromtimestamp(0, UTC)
_KAFKA_TAIL = ("_topic", "_partition", "_offset")

#: ``build(message, offset, pending)`` appends the record's row; False if it projects nothing.
RowBuilder = Callable[[Message, int, Pending], bool]
#: A generated row appender: ``(message, record, headers, offset, pending)``.
_Appender = Callable[[Message, Mapping[str, Any], dict[str, Any], int, Pending], None]


def row_width(table: TableSpec) -> int:
    """How many columns a :class:`Pending` of ``table``'s rows holds (all but ``_topic`` and
    ``_partition``, which the batch fills in)."""
    names = tuple(c.name for c in table.columns[-3:])
    if names != _KAFKA_TAIL:
        raise ValueError(f"table {table.name} does not end with the columns {_KAFKA_TAIL}")
    return len(table.columns) - 2


def _time(message: Message) -> datetime:
    _kind, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, UTC) if millis and millis > 0 else _EPOCH


def _append_row(pending: Pending, row: Sequence[Any]) -> None:
    for append, value in zip(pending.append, row, strict=True):
        append(value)


class _RowSource:
    """The Python source of one generated row appender.

    The head columns are expressions over ``m`` (the message), ``hd`` (its headers as a
    dict of bytes) and ``r`` (the record); the model columns read ``r`` through the
    converters of :func:`~streamfold.sink.types.column_plan`; the offset ends the row.
    Header values are decoded as :func:`streamfold.contracts.headers.header_map` decodes them.
    """

    def __init__(self) -> None:
        self.values: list[str] = []
        self.globals: dict[str, Any] = {"Ack": Ack, "_json": json_bytes}
        self.before: list[str] = []
        self.after: list[str] = []

    def header(self, name: str, default: str = "") -> str:
        """The expression of header ``name`` as text (``default`` when absent)."""
        text = f"(hd.get({name!r}) or b'').decode('utf-8', 'replace')"
        return f"({text} if {name!r} in hd else {default!r})" if default else text

    def model(self, plan: Sequence[tuple[str, Callable[[Any], Any] | None]]) -> None:
        for index, (field, convert) in enumerate(plan):
            if convert is None:
                self.values.append(f"get({field!r})")
            else:
                name = f"_convert{index}"
                self.globals[name] = convert
                self.values.append(f"{name}(get({field!r}))")

    def compile(self, width: int) -> _Appender:
        if len(self.values) != width - 1:
            raise ValueError(f"a row of {len(self.values) + 1} values for {width} columns")
        appends = ", ".join(f"a{i}" for i in range(width))
        lines = [
            "def _append(m, r, hd, o, pending):",
            "    get = r.get",
            "    stamp = m.timestamp()[1]",
            "    millis = stamp if stamp and stamp > 0 else 0",
            *(f"    {line}" for line in self.before),
            f"    {appends}, = pending.append",
            *(f"    a{i}({value})" for i, value in enumerate(self.values)),
            f"    a{width - 1}(o)",
            *(f"    {line}" for line in self.after),
        ]
        namespace = dict(self.globals)
        exec(compile("\n".join(lines), "<streamfold.sink.rows>", "exec"), namespace)
        appender: _Appender = namespace["_append"]
        return appender


class _Builders:
    """The builders of one aggregate's topics."""

    def __init__(self, context: BoundedContext, aggregate: Aggregate[Any], codec: AvroCodec):
        self.aggregate = aggregate
        self.name = aggregate.name
        self.reader = RecordReader(codec, ())  # any record, the writer's schema, as dicts
        self._ns = context.namespace

    def _plan(
        self, model: type[BaseModel], table: TableSpec
    ) -> list[tuple[str, Callable[[Any], Any] | None]]:
        return column_plan(avro_schema(model, self._ns), table.model_columns)

    def events(self, table: TableSpec) -> RowBuilder:
        width = row_width(table)
        appenders: dict[str, _Appender] = {}
        for model in self.aggregate.events:
            source = _RowSource()
            source.values += [
                source.header(h.TENANT),
                "(m.key() or b'').decode()",
                f"int({source.header(h.AGGREGATE_VERSION, '0')})",
                repr(model.__name__),
                "millis",
                source.header(h.COMMAND_ID),
            ]
            source.model(self._plan(model, table))
            source.values.append("_json(r)")
            appenders[full_name(model, self._ns)] = source.compile(width)
        decode = self.reader.decode_dict

        def build(message: Message, offset: int, pending: Pending) -> bool:
            try:
                record_name, record = decode(message.value() or b"")
            except CodecError:
                return False
            append = appenders.get(record_name)
            if append is None:
                return False
            append(message, record, dict(message.headers() or ()), offset, pending)
            return True

        return build

    def state(self, table: TableSpec) -> RowBuilder:
        source = _RowSource()
        source.before = [
            "aggregate_id = (m.key() or b'').decode()",
            f"version = int({source.header(h.AGGREGATE_VERSION, '0')})",
            f"command_id = {source.header(h.COMMAND_ID)}",
        ]
        source.values += [
            source.header(h.TENANT),
            "aggregate_id",
            "version",
            "1 if hd.get('deleted') == b'true' else 0",
            "millis",
            "command_id",
        ]
        source.model(self._plan(self.aggregate.state_type, table))
        source.globals["_name"] = self.name
        source.after = [
            "if command_id:",
            "    pending.acks.append(Ack(command_id, _name, aggregate_id, version, 'accepted'))",
        ]
        append = source.compile(row_width(table))
        decode = self.reader.decode_dict

        def build(message: Message, offset: int, pending: Pending) -> bool:
            try:
                _record_name, record = decode(message.value() or b"")
            except CodecError:
                return False
            append(message, record, dict(message.headers() or ()), offset, pending)
            return True

        return build

    def results(self) -> RowBuilder:
        decode = self.reader.decode_dict

        def build(message: Message, offset: int, pending: Pending) -> bool:
            headers = h.header_map(message.headers())
            try:
                _record_name, r = decode(message.value() or b"")
            except CodecError:
                return False
            processed_at = r.get("processed_at") or _time(message)
            _append_row(
                pending,
                [
                    r["command_id"],
                    r.get("aggregate_type") or "",
                    r.get("aggregate_id") or "",
                    r.get("command_type") or "",
                    r.get("outcome") or "",
                    int(r.get("version") or 0),
                    list(r.get("event_types") or []),
                    r.get("code") or "",
                    r.get("message") or "",
                    1 if r.get("duplicate") else 0,
                    processed_at,
                    headers.get(h.TENANT, ""),
                    headers.get(h.PRINCIPAL, ""),
                    offset,
                ],
            )
            # An accepted command with new events is acked by its state record.
            if r.get("outcome") != "accepted" or not r.get("event_types") or r.get("duplicate"):
                pending.acks.append(
                    Ack(
                        r["command_id"],
                        r.get("aggregate_type") or "",
                        r.get("aggregate_id") or "",
                        int(r.get("version") or 0),
                        r.get("outcome") or "",
                    )
                )
            return True

        return build

    def commands(self) -> RowBuilder:
        decode, name = self.reader.decode_dict, self.name
        short = {full_name(m, self._ns): m.__name__ for m in self.aggregate.commands}

        def build(message: Message, offset: int, pending: Pending) -> bool:
            headers = h.header_map(message.headers())
            if h.FORWARDED_FROM in headers:
                # A worker's copy of a command that landed off its aggregate's partition:
                # the log keeps the command where its producer put it, once.
                return False
            try:
                record_name, record = decode(message.value() or b"")
            except CodecError:
                return False  # dead-lettered by the worker; its result says why
            topic, partition = message.topic(), message.partition()
            command_id = headers.get(h.COMMAND_ID) or h.derived_command_id(
                topic or "", partition or 0, offset
            )
            stamp = headers.get(h.ISSUED_AT)
            try:
                issued_at = datetime.fromisoformat(stamp) if stamp else _time(message)
            except ValueError:
                issued_at = _time(message)
            _append_row(
                pending,
                [
                    command_id,
                    short.get(record_name, record_name.rpartition(".")[2]),
                    name,
                    (message.key() or b"").decode(errors="replace"),
                    headers.get(h.TENANT, ""),
                    headers.get(h.PRINCIPAL, ""),
                    headers.get(h.REQUEST_ID, ""),
                    issued_at,
                    json_text(record),
                    offset,
                ],
            )
            return True

        return build


def builders_for(context: BoundedContext, aggregate: Aggregate[Any], codec: AvroCodec) -> _Builders:
    return _Builders(context, aggregate, codec)
