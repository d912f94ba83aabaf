"""Rebuilding a projection from the events topic, then swapping it in atomically.

``streamfold projections rebuild <table>`` rebuilds ``<ctx>_<agg>_events`` (every event again)
or ``<ctx>_<agg>_state_last`` (each aggregate's events folded with the domain's own evolve
functions, one row per aggregate at its last version) into a fresh table
``<table>__rebuild``, then ``EXCHANGE TABLES`` swaps the two in one atomic step and the old
table is dropped.

It reads each partition of the events topic from its start up to the offset the connector's
sink has committed for it (not to the end): the rebuilt table then holds exactly what the
live one held, and the sink, started again, goes on from there. The sink must not run during
a rebuild (on chDB it could not anyway: it owns the path); a sink with an unfinished batch
(an intent in its committed offsets) must first be started and stopped so it finishes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamfold.contracts import headers as h
from streamfold.contracts.avro import avro_schema
from streamfold.contracts.codec import AvroCodec, CodecError, RecordReader
from streamfold.domain.aggregate import Aggregate, Snapshot
from streamfold.domain.context import BoundedContext
from streamfold.domain.naming import aggregate_topics
from streamfold.errors import ConfigurationError, PermanentError
from streamfold.sink.batches import Batch, Pending, intended_last
from streamfold.sink.ddl import TableSpec, aggregate_tables
from streamfold.sink.rows import builders_for, row_width
from streamfold.sink.spec import ConnectorSpec
from streamfold.sink.target import ClickHouseTarget
from streamfold.sink.types import row_converter
from streamfold.transport.settings import KafkaSettings

__all__ = ["RebuildError", "rebuild"]

_CHUNK = 20_000
Progress = Callable[[int, int], None]  # (records read so far, records in all)


class RebuildError(PermanentError):
    """The table cannot be rebuilt now (see the message)."""


def _find(context: BoundedContext, spec: ConnectorSpec, table: str) -> tuple[Any, TableSpec]:
    for aggregate in spec.select(context):
        for candidate in aggregate_tables(context, aggregate):
            if candidate.name == table:
                if candidate.kind not in ("events", "state_last"):
                    break
                return aggregate, candidate
    raise ConfigurationError(
        f"{table!r} is not a rebuildable table of this connector (an events or state_last "
        "table of one of its aggregates)"
    )


def _committed(
    kafka: KafkaSettings, spec: ConnectorSpec, topic: str
) -> tuple[Consumer, dict[int, tuple[int, int]]]:
    """A reader of ``topic`` and, per partition, ``(low watermark, sink's committed offset)``."""
    consumer = Consumer(kafka.consumer_config(spec.group_id, **{"enable.partition.eof": True}))
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    ranges: dict[int, tuple[int, int]] = {}
    for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30):
        if intended_last(tp.metadata) is not None:
            consumer.close()
            raise RebuildError(
                f"the sink has an unfinished batch on {topic}/{tp.partition}: start the sink "
                "and stop it once it has caught up, then rebuild"
            )
        low, _high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 30)
        ranges[tp.partition] = (low, max(low, tp.offset))
    return consumer, ranges


def rebuild(
    spec: ConnectorSpec,
    context: BoundedContext,
    kafka: KafkaSettings,
    codec: AvroCodec,
    target: ClickHouseTarget,
    table: str,
    progress: Progress = lambda done, total: None,
) -> int:
    """Rebuild ``table`` and swap it in; return the rows it holds now."""
    aggregate, live = _find(context, spec, table)
    fresh = dataclasses.replace(live, name=f"{live.name}__rebuild")
    topic = aggregate_topics(context.name, aggregate.name, spec.topic_prefix).events
    consumer, ranges = _committed(kafka, spec, topic)
    total = sum(end - low for low, end in ranges.values())
    try:
        target.ensure([live])
        target.command(f"DROP TABLE IF EXISTS `{target.database}`.`{fresh.name}`")
        target.ensure([fresh])
        wanted = {p: (low, end) for p, (low, end) in ranges.items() if end > low}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _end) in wanted.items()])
        if live.kind == "events":
            rows = _events(
                consumer, context, aggregate, codec, target, fresh, wanted, total, progress
            )
        else:
            rows = _state_last(
                consumer, context, aggregate, codec, target, fresh, wanted, total, progress
            )
    finally:
        consumer.close()
    db = f"`{target.database}`"
    target.command(f"EXCHANGE TABLES {db}.`{live.name}` AND {db}.`{fresh.name}`")
    target.command(f"DROP TABLE {db}.`{fresh.name}`")
    return rows


def _read(
    consumer: Consumer, wanted: dict[int, tuple[int, int]], total: int, progress: Progress
) -> Any:
    """Every record of the wanted ranges, partition by partition order kept."""
    open_ = dict(wanted)
    done = 0
    while open_:
        for message in consumer.consume(5000, 1.0):
            partition = message.partition() or 0
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_.pop(partition, None)
                    continue
                raise RebuildError(f"reading {message.topic()}: {error}")
            end = open_.get(partition, (0, -1))[1]
            offset = message.offset() or 0
            if offset >= end:
                open_.pop(partition, None)
                continue
            done += 1
            yield message
            if offset + 1 >= end:
                open_.pop(partition, None)
        progress(done, total)
    progress(total, total)


def _events(
    consumer: Consumer,
    context: BoundedContext,
    aggregate: Aggregate[Any],
    codec: AvroCodec,
    target: ClickHouseTarget,
    fresh: TableSpec,
    wanted: dict[int, tuple[int, int]],
    total: int,
    progress: Progress,
) -> int:
    build = builders_for(context, aggregate, codec).events(fresh)
    width = row_width(fresh)
    chunk: dict[int, Pending] = {}
    topic = ""
    inserted = rows = 0

    def insert() -> int:
        batch = Batch(topic, sorted(chunk.items()))
        target.insert_columns(fresh, batch.columns(), f"rebuild:{fresh.name}:{inserted}")
        chunk.clear()
        return sum(p.rows for _, p in batch.members)

    for message in _read(consumer, wanted, total, progress):
        topic = message.topic() or ""
        partition = message.partition() or 0
        pending = chunk.get(partition)
        if pending is None:
            pending = chunk[partition] = Pending(width)
        if build(message, message.offset() or 0, pending):
            rows += 1
        if rows == _CHUNK:
            inserted += insert()
            rows = 0
    return inserted + insert()


def _state_last(
    consumer: Consumer,
    context: BoundedContext,
    aggregate: Aggregate[Any],
    codec: AvroCodec,
    target: ClickHouseTarget,
    fresh: TableSpec,
    wanted: dict[int, tuple[int, int]],
    total: int,
    progress: Progress,
) -> int:
    """Fold each aggregate's events (in partition order) with the domain's evolve functions."""
    reader = RecordReader(codec, ())
    models = {f"{context.namespace}.{m.__name__}": m for m in aggregate.events}
    latest: dict[str, tuple[Snapshot[Any], list[Any]]] = {}
    for message in _read(consumer, wanted, total, progress):
        try:
            name, record = reader.decode_dict(message.value() or b"")
        except CodecError:
            continue
        model = models.get(name)
        if model is None:
            continue
        key = (message.key() or b"").decode()
        headers = h.header_map(message.headers())
        before = latest.get(key, (Snapshot(), []))[0]
        after = aggregate.fold([model.model_validate(record)], before)
        _kind, millis = message.timestamp()
        meta = [
            headers.get(h.TENANT, ""),
            headers.get(h.COMMAND_ID, ""),
            datetime.fromtimestamp(millis / 1000, UTC),
            message.topic() or "",
            message.partition() or 0,
            message.offset() or 0,
        ]
        latest[key] = (after, meta)

    convert = row_converter(
        avro_schema(aggregate.state_type, context.namespace), fresh.model_columns
    )
    rows = []
    for aggregate_id, (
        snapshot,
        (tenant, command_id, at, topic, partition, offset),
    ) in latest.items():
        if snapshot.state is None:
            continue
        record = snapshot.state.model_dump()
        rows.append(
            [
                tenant,
                aggregate_id,
                snapshot.version,
                1 if snapshot.deleted else 0,
                at,
                command_id,
                *convert(record),
                topic,
                partition,
                offset,
            ]
        )
    for start in range(0, len(rows), _CHUNK):
        target.insert(fresh, rows[start : start + _CHUNK], f"rebuild:{fresh.name}:{start}")
    return len(rows)
