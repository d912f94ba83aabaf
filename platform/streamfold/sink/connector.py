"""The sink connector: project an aggregate context's topics into ClickHouse, exactly once.

It consumes (``read_committed``, one consumer group per connector) the events, state,
results and commands topics of the spec's aggregates and inserts rows into the tables of
:mod:`streamfold.sink.ddl`. Rows of one source partition go in batches; a batch is one
offset range ``[first, last]`` of one partition, inserted into each of its tables with the
deduplication token ``<connector>:<table>:<topic>:<partition>:<first>-<last>``.

Idempotent under retries and crashes, by keeping batches deterministic:

1. before inserting, the sink commits, for each partition of the flush, its current offset
   with the metadata ``streamfold.sink:<last>``: the *intent* to insert ``[first, last]``;
2. it inserts every table's rows with the batch's token (a retry after a timeout sends the
   same rows with the same token: ClickHouse keeps one copy);
3. it commits ``last + 1``, without metadata. The PROJECTED acks go out as soon as the tables
   they stand for (state_last, command_results) have their rows, before the other tables.

After a crash anywhere in 1-3, the next owner of the partition reads the committed offset and
its intent, and makes its first batch exactly ``[first, last]`` again, so its inserts carry
the same tokens and are dropped as duplicates when they had landed. The tables keep the
tokens of their last 10,000 inserts (``non_replicated_deduplication_window``).

When ClickHouse is unreachable the sink keeps the batch and retries it with backoff (at most
``_MAX_BACKOFF_S`` between tries), reporting ``streamfold_sink_target_up 0``; nothing is
committed meanwhile, so nothing is lost. A PROJECTED ack (``<ctx>.projected``, keyed by
command id, on the command's partition number) follows each durable batch: an accepted
command is acked by its state row, a rejected, invalid or repeated one by its result row.
Acks are at-least-once: a replayed batch sends them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict

from streamfold.contracts.codec import AvroCodec
from streamfold.domain.context import BoundedContext
from streamfold.domain.naming import aggregate_topics, context_topics
from streamfold.observability.logging import get_logger
from streamfold.runtime.results import RESULT_NAMESPACE
from streamfold.sink.ddl import TableSpec, aggregate_tables, commands_view_sql, context_tables
from streamfold.sink.rows import Ack, RowBuilder, builders_for
from streamfold.sink.spec import ConnectorSpec
from streamfold.sink.target import ClickHouseTarget, TargetUnavailableError
from streamfold.transport.admin import KafkaAdmin, TopicSpec, translate_kafka_error
from streamfold.transport.settings import KafkaSettings

__all__ = ["ProjectedAck", "SinkConnector", "SinkMetrics"]

log = get_logger(__name__)

_INTENT = "streamfold.sink:"


def intent(last: int) -> str:
    """The offset metadata that records the intent to insert a range ending at ``last``."""
    return f"{_INTENT}{last}"


def intended_last(metadata: str | None) -> int | None:
    """The last offset of the range an offset's metadata says was being inserted, if any."""
    if metadata and metadata.startswith(_INTENT):
        return int(metadata[len(_INTENT) :])
    return None


_MAX_BACKOFF_S = 5.0
_TIMEOUT = 30.0


class ProjectedAck(BaseModel):
    """A command's projection is durable in ClickHouse (the record on ``<ctx>.projected``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str
    connector: str
    aggregate_type: str
    aggregate_id: str
    version: int
    outcome: str
    projected_at: AwareDatetime


class SinkMetrics:
    """What a sink reports on ``/metrics``, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rows = Counter(
            "streamfold_sink_rows", "Rows inserted", ["table"], registry=self.registry
        )
        self.batches = Counter("streamfold_sink_batches", "Durable batches", registry=self.registry)
        self.skipped = Counter(
            "streamfold_sink_skipped_records",
            "Records that project nothing (undecodable: the worker dead-lettered them)",
            ["topic"],
            registry=self.registry,
        )
        self.retries = Counter(
            "streamfold_sink_target_retries", "Inserts retried", registry=self.registry
        )
        self.target_up = Gauge(
            "streamfold_sink_target_up", "1 while ClickHouse answers", registry=self.registry
        )
        self.insert_seconds = Histogram(
            "streamfold_sink_flush_seconds",
            "Time to make one flush durable",
            registry=self.registry,
        )
        self.acks = Counter("streamfold_sink_acks", "PROJECTED acks sent", registry=self.registry)
        self.ack_failures = Counter(
            "streamfold_sink_ack_failures", "PROJECTED acks not delivered", registry=self.registry
        )
        self.target_up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(slots=True)
class _Source:
    """One source topic: how to build its rows, and the tables they go to."""

    build: RowBuilder
    tables: tuple[TableSpec, ...]
    #: How many of ``tables`` (the first ones) the acks of its rows stand for.
    acked_by: int = 0


@dataclass(slots=True)
class _Pending:
    """Rows read from one partition and not yet durable."""

    first: int = -1
    last: int = -1
    since: float = 0.0
    rows: list[list[Any]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)


class SinkConnector:
    """Runs one connector spec; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        spec: ConnectorSpec,
        context: BoundedContext,
        kafka: KafkaSettings,
        codec: AvroCodec,
        target: ClickHouseTarget,
        metrics: SinkMetrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.context = context
        self.kafka = kafka
        self.codec = codec
        self.target = target
        self.metrics = metrics or SinkMetrics()
        self._sleep = sleep
        self.sources: dict[str, _Source] = {}
        self.tables: list[TableSpec] = list(context_tables(context))
        by_kind = {t.kind: t for t in self.tables}
        for aggregate in spec.select(context):
            topics = aggregate_topics(context.name, aggregate.name, spec.topic_prefix)
            own = {t.kind: t for t in aggregate_tables(context, aggregate)}
            self.tables += own.values()
            rows = builders_for(context, aggregate, codec)
            self.sources[topics.events] = _Source(rows.events(own["events"]), (own["events"],))
            state = (own["state_last"], own["state"])
            self.sources[topics.state] = _Source(rows.state(own["state_last"]), state, 1)
            results = (by_kind["command_results"],)
            self.sources[topics.results] = _Source(rows.results(), results, 1)
            self.sources[topics.commands] = _Source(rows.commands(), (by_kind["command_log"],))
        self.projected_topic = context_topics(context.name, spec.topic_prefix).projected
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._bounds: dict[tuple[str, int], int] = {}  # replays: the intent's last offset
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._ack_writer = codec.writer(self.projected_topic, ProjectedAck, RESULT_NAMESPACE)
        self._running = False
        self._started = False
        self._target_up = True
        self.flushed_batches = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create the tables (and columns a model gained), the acks topic; join the group."""
        added = self._retrying(
            lambda: self.target.ensure(
                self.tables, [commands_view_sql(self.context, self.target.database)]
            ),
            "creating the tables",
        )
        if added:
            log.info("columns added", columns=added)
        admin = KafkaAdmin(self.kafka)
        commands = next(t for t in self.sources if t.endswith(".commands"))
        partitions = len(admin.describe(commands).partitions)
        replication = min(3, max(1, admin.broker_count()))
        admin.create_topics([TopicSpec(self.projected_topic, partitions, replication)])
        self._producer = Producer(self.kafka.producer_config(**{"linger.ms": 5}))
        self._consumer = Consumer(
            self.kafka.consumer_config(
                self.spec.group_id,
                **{"max.poll.interval.ms": 600_000, "fetch.queue.backoff.ms": 10},
            )
        )
        self._consumer.subscribe(
            list(self.sources),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._started = True
        log.info(
            "sink started",
            connector=self.spec.name,
            target=self.target.target,
            database=self.target.database,
            topics=list(self.sources),
        )

    def run(self, until: Callable[[], bool] | None = None) -> None:
        if self._consumer is None:
            self.start()
        self._running = True
        try:
            while self._running and not (until is not None and until()):
                self.step()
            # What is read is made durable, except a replayed batch not read to its end yet:
            # it must keep its range (the next run reads it again).
            self.flush([key for key in self._pending if key not in self._bounds])
        finally:
            self.close()

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        self._started = False

    @property
    def ready(self) -> bool:
        """Started, and ClickHouse answered the last time the sink asked."""
        return self._started and self._target_up

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        """Read what is there, flush the partitions that are due."""
        assert self._consumer is not None
        try:
            messages = self._consumer.consume(5000, 0.05)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "reading the projected topics") from exc
        now = time.monotonic()
        due: set[tuple[str, int]] = set()
        limit = self.spec.batch_rows
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", error=str(error))
                continue
            topic, partition, offset = (
                message.topic() or "",
                message.partition() or 0,
                message.offset() or 0,
            )
            key = (topic, partition)
            bound = self._bounds.get(key)
            if bound is not None and offset > bound:
                self.flush([key])  # the intent's range ended before this record
                self._bounds.pop(key, None)
                due.discard(key)
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(first=offset, since=now)
            pending.last = offset
            built = self.sources[topic].build(message)
            if built.row is not None:
                pending.rows.append(built.row)
            else:
                self.metrics.skipped.labels(topic).inc()
            if built.ack is not None:
                pending.acks.append(built.ack)
            if bound is not None and offset == bound:
                self.flush([key])  # the replayed batch is complete: exactly as before
                self._bounds.pop(key, None)
                due.discard(key)
            elif bound is None and len(pending.rows) >= limit:
                due.add(key)
        interval = self.spec.batch_interval_ms / 1000
        for key, pending in self._pending.items():
            if key not in self._bounds and now - pending.since >= interval:
                due.add(key)
        if due:
            self.flush(sorted(due))

    def flush(self, keys: list[tuple[str, int]]) -> None:
        """Make the pending rows of ``keys`` durable: intent, inserts, acks, offsets.

        The tables that acks stand for (state_last, command_results) are inserted first and
        the acks sent right after them, so PROJECTED does not wait for the other tables; the
        offsets follow the last insert (a replay after a crash resends the acks).
        """
        assert self._consumer is not None
        batches = [(key, self._pending.pop(key)) for key in keys if key in self._pending]
        if not batches:
            return
        started = time.monotonic()
        # 1. the intents (a replay re-forms exactly these ranges)
        self._commit([TopicPartition(t, p, b.first, intent(b.last)) for (t, p), b in batches])
        # 2. the inserts, each with its range's token; the acks after the tables they stand for
        later: list[tuple[TableSpec, list[list[Any]], str]] = []
        for (topic, partition), batch in batches:
            where = f"{topic}:{partition}:{batch.first}-{batch.last}"
            source = self.sources[topic]
            for index, table in enumerate(source.tables):
                token = f"{self.spec.name}:{table.name}:{where}"
                if index < source.acked_by:
                    self._insert(table, batch.rows, token)
                else:
                    later.append((table, batch.rows, token))
        self._send_acks(batches)
        for table, rows, token in later:
            self._insert(table, rows, token)
        # 3. the offsets
        self._commit([TopicPartition(t, p, b.last + 1) for (t, p), b in batches])
        self.metrics.batches.inc(len(batches))
        self.metrics.insert_seconds.observe(time.monotonic() - started)
        self.flushed_batches += len(batches)

    def _insert(self, table: TableSpec, rows: list[list[Any]], token: str) -> None:
        self._retrying(
            lambda: self.target.insert(table, rows, token), f"inserting into {table.name}"
        )
        self.metrics.rows.labels(table.name).inc(len(rows))

    def _send_acks(self, batches: list[tuple[tuple[str, int], _Pending]]) -> None:
        if not self.spec.acks or self._producer is None:
            return
        now = datetime.now(UTC)
        encode = self._ack_writer.encode_dict
        sent = 0
        for (_topic, partition), batch in batches:
            for ack in batch.acks:
                value = encode(
                    {
                        "command_id": ack.command_id,
                        "connector": self.spec.name,
                        "aggregate_type": ack.aggregate_type,
                        "aggregate_id": ack.aggregate_id,
                        "version": ack.version,
                        "outcome": ack.outcome,
                        "projected_at": now,
                    }
                )
                while True:
                    try:
                        self._producer.produce(
                            self.projected_topic,
                            value,
                            ack.command_id.encode(),
                            partition=partition,
                            on_delivery=self._ack_delivered,
                        )
                        break
                    except BufferError:
                        self._producer.poll(0.05)
                sent += 1
        self._producer.poll(0)
        self.metrics.acks.inc(sent)

    def _ack_delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:  # the rows are durable; only the signal is lost (callers time out)
            self.metrics.ack_failures.inc()
            log.warning("PROJECTED ack not delivered", error=str(err), key=message.key())

    def _commit(self, offsets: list[TopicPartition]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "committing sink offsets") from exc

    def _retrying(self, action: Callable[[], Any], doing: str) -> Any:
        """Run ``action`` until ClickHouse answers; back off while it is unavailable."""
        delay = 0.2
        while True:
            try:
                result = action()
            except TargetUnavailableError as exc:
                self._target_up = False
                self.metrics.target_up.set(0)
                self.metrics.retries.inc()
                log.warning(
                    "ClickHouse unavailable; retrying",
                    doing=doing,
                    error=str(exc)[:300],
                    retry_in_s=delay,
                )
                self._sleep(delay)
                delay = min(_MAX_BACKOFF_S, delay * 2)
                continue
            self._target_up = True
            self.metrics.target_up.set(1)
            return result

    # ------------------------------------------------------------------ rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in consumer.committed(partitions, timeout=_TIMEOUT):
            last = intended_last(tp.metadata)
            if last is not None:
                self._bounds[(tp.topic, tp.partition)] = last
                log.info(
                    "replaying an unfinished batch",
                    topic=tp.topic,
                    partition=tp.partition,
                    first=tp.offset,
                    last=self._bounds[(tp.topic, tp.partition)],
                )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Not durable, not committed: the next owner reads these records again.
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)
            self._bounds.pop((tp.topic, tp.partition), None)
