"""Records of an aggregate's topics to rows of its projection tables.

One builder per source topic kind; each returns, for one Kafka record, the row (values in
the table's column order, :mod:`streamfold.sink.ddl`) and the PROJECTED ack it allows, if
any. Typed columns come from the model's Avro schema (the reader's view): a record written
with an older schema lacks a newer optional field, which becomes NULL (or empty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message
from pydantic import BaseModel

from streamfold.contracts.avro import avro_schema, full_name
from streamfold.contracts.codec import AvroCodec, CodecError, RecordReader
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.runtime import headers as h
from streamfold.sink.ddl import TableSpec, json_text, row_converter

__all__ = ["Ack", "Built", "RowBuilder", "builders_for"]

_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class Ack:
    """A command whose projection is durable: its new state, or its rejection."""

    command_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    outcome: str


@dataclass(frozen=True, slots=True)
class Built:
    row: list[Any] | None  # None: the record projects nothing (undecodable; see the DLQ)
    ack: Ack | None


RowBuilder = Callable[[Message], Built]


def _time(message: Message) -> datetime:
    _kind, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, UTC) if millis and millis > 0 else _EPOCH


def _millis(message: Message) -> int:
    """The record's timestamp in milliseconds: a DateTime64(3) value clickhouse-connect
    writes as it is (a datetime it converts, one by one). A column takes one or the other."""
    _kind, millis = message.timestamp()
    return millis if millis and millis > 0 else 0


def _tail(message: Message) -> list[Any]:
    return [message.topic() or "", message.partition() or 0, message.offset() or 0]


class _Builders:
    """The builders of one aggregate's topics."""

    def __init__(self, context: BoundedContext, aggregate: Aggregate[Any], codec: AvroCodec):
        self.aggregate = aggregate
        self.name = aggregate.name
        self.reader = RecordReader(codec, ())  # any record, the writer's schema, as dicts
        self._ns = context.namespace

    def _converter(
        self, model: type[BaseModel], table: TableSpec, namespace: str
    ) -> Callable[[dict[str, Any]], list[Any]]:
        return row_converter(avro_schema(model, namespace), table.model_columns)

    def events(self, table: TableSpec) -> RowBuilder:
        converters = {
            full_name(m, self._ns): (m.__name__, self._converter(m, table, self._ns))
            for m in self.aggregate.events
        }
        reader = self.reader

        def build(message: Message) -> Built:
            headers = h.header_map(message.headers())
            try:
                record_name, record = reader.decode_dict(message.value() or b"")
            except CodecError:
                return Built(None, None)
            found = converters.get(record_name)
            if found is None:
                return Built(None, None)
            event_type, convert = found
            row = [
                headers.get(h.TENANT, ""),
                (message.key() or b"").decode(),
                int(headers.get(h.AGGREGATE_VERSION, "0")),
                event_type,
                _millis(message),
                headers.get(h.COMMAND_ID, ""),
                *convert(record),
                json_text(record),
                *_tail(message),
            ]
            return Built(row, None)

        return build

    def state(self, table: TableSpec) -> RowBuilder:
        convert = self._converter(self.aggregate.state_type, table, self._ns)
        reader, name = self.reader, self.name

        def build(message: Message) -> Built:
            headers = h.header_map(message.headers())
            try:
                _record_name, record = reader.decode_dict(message.value() or b"")
            except CodecError:
                return Built(None, None)
            aggregate_id = (message.key() or b"").decode()
            version = int(headers.get(h.AGGREGATE_VERSION, "0"))
            command_id = headers.get(h.COMMAND_ID, "")
            row = [
                headers.get(h.TENANT, ""),
                aggregate_id,
                version,
                1 if headers.get("deleted") == "true" else 0,
                _millis(message),
                command_id,
                *convert(record),
                *_tail(message),
            ]
            ack = Ack(command_id, name, aggregate_id, version, "accepted") if command_id else None
            return Built(row, ack)

        return build

    def results(self) -> RowBuilder:
        reader = self.reader

        def build(message: Message) -> Built:
            headers = h.header_map(message.headers())
            try:
                _record_name, r = reader.decode_dict(message.value() or b"")
            except CodecError:
                return Built(None, None)
            processed_at = r.get("processed_at") or _time(message)
            row = [
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
                *_tail(message),
            ]
            ack = None
            # An accepted command with new events is acked by its state record.
            if r.get("outcome") != "accepted" or not r.get("event_types") or r.get("duplicate"):
                ack = Ack(
                    r["command_id"],
                    r.get("aggregate_type") or "",
                    r.get("aggregate_id") or "",
                    int(r.get("version") or 0),
                    r.get("outcome") or "",
                )
            return Built(row, ack)

        return build

    def commands(self) -> RowBuilder:
        reader, name = self.reader, self.name
        short = {full_name(m, self._ns): m.__name__ for m in self.aggregate.commands}

        def build(message: Message) -> Built:
            headers = h.header_map(message.headers())
            try:
                record_name, record = reader.decode_dict(message.value() or b"")
            except CodecError:
                return Built(None, None)  # dead-lettered by the worker; its result says why
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            command_id = headers.get(h.COMMAND_ID) or h.derived_command_id(
                topic or "", partition or 0, offset or 0
            )
            stamp = headers.get(h.ISSUED_AT)
            try:
                issued_at = datetime.fromisoformat(stamp) if stamp else _time(message)
            except ValueError:
                issued_at = _time(message)
            row = [
                command_id,
                short.get(record_name, record_name.rpartition(".")[2]),
                name,
                (message.key() or b"").decode(errors="replace"),
                headers.get(h.TENANT, ""),
                headers.get(h.PRINCIPAL, ""),
                headers.get(h.REQUEST_ID, ""),
                issued_at,
                json_text(record),
                *_tail(message),
            ]
            return Built(row, None)

        return build


def builders_for(context: BoundedContext, aggregate: Aggregate[Any], codec: AvroCodec) -> _Builders:
    return _Builders(context, aggregate, codec)
