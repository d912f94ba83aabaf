"""The sink connector: project an aggregate context's topics into ClickHouse, exactly once.

It consumes (``read_committed``, one consumer group per connector) the events, state,
results and commands topics of the spec's aggregates and inserts rows into the tables of
:mod:`streamfold.sink.ddl`. Rows are read per partition; a flush makes everything read
durable, as one *batch* per source topic: for each of its partitions one offset range
``[first, last]``, and one insert per table for all of them, with a deduplication token
derived from those ranges (``<connector>:<table>:<topic>:<partition>:<first>-<last>`` for a
batch of one range, ``<connector>:<table>:<topic>:g<digest of the ranges>`` otherwise). A
flush costs one insert per table however many partitions it covers: small inserts are what
a MergeTree pays for most, so this is what keeps PROJECTED latency low.

Idempotent under retries and crashes, by keeping batches deterministic:

1. before inserting, the sink commits, for each range of the flush, its partition's current
   offset with the metadata ``streamfold.sink:<last>[:<batch digest>:<ranges>]``
   (:class:`Intent`): the *intent* to insert ``[first, last]`` within that batch;
2. it inserts every table's rows with the batch's token (a retry after a timeout sends the
   same rows with the same token: ClickHouse keeps one copy);
3. it commits ``last + 1``, without metadata. The PROJECTED acks go out as soon as the tables
   they stand for (state_last, command_results) have their rows, before the other tables.

Step 2 runs on the sink's insert thread while the loop reads on (ClickHouse works without
the GIL); one flush is in flight at a time, and steps 1 and 3 stay on the consumer's thread.

After a crash anywhere in 1-3, the next owner of a partition reads the committed offset and
its intent, and reads exactly ``[first, last]`` again. When it owns every range of the batch
(one sink per connector, or the same assignment), it re-forms the batch: the same tokens, so
ClickHouse drops the inserts that had landed. When another sink owns some of the batch's
ranges now (a rebalance moved them), each range it owns goes alone, and a table that already
holds rows of the range (by ``_partition`` and ``_offset``) is left out: an insert lands
whole or not at all. (Against a server over HTTP, an insert of the dead sink still in
flight could land after that check and double the range: it takes a crash and a rebalance
that splits the batch at once.) The tables keep the tokens of their last 10,000 inserts
(``non_replicated_deduplication_window``).

When ClickHouse is unreachable the sink keeps the batch and retries it with backoff (at most
``_MAX_BACKOFF_S`` between tries), reporting ``streamfold_sink_target_up 0``; nothing is
committed meanwhile, so nothing is lost. A PROJECTED ack (``<ctx>.projected``, keyed by
command id, on the command's partition number) follows each durable batch: an accepted
command is acked by its state row, a rejected, invalid or repeated one by its result row.
Acks are at-least-once: a replayed batch sends them again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import AwareDatetime, BaseModel, ConfigDict

from streamfold.contracts.avro import full_name
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.results import RESULT_NAMESPACE
from streamfold.domain.context import BoundedContext
from streamfold.domain.naming import aggregate_topics, context_topics
from streamfold.errors import RetryableError
from streamfold.observability.logging import get_logger
from streamfold.sink.batches import Ack, Batch, Intent, Pending, intent, parse_intent
from streamfold.sink.ddl import TableSpec, aggregate_tables, commands_view_sql, context_tables
from streamfold.sink.metrics import SinkMetrics
from streamfold.sink.passthrough import Framer
from streamfold.sink.rows import RowBuilder, builders_for
from streamfold.sink.sources import BatchRows, Source
from streamfold.sink.spec import ConnectorSpec
from streamfold.sink.target import SinkTarget, TargetError, TargetUnavailableError
from streamfold.transport.admin import (
    COORDINATOR_MOVING,
    KafkaAdmin,
    TopicSpec,
    translate_kafka_error,
)
from streamfold.transport.producing import produce
from streamfold.transport.rejoins import Rejoins
from streamfold.transport.settings import KafkaSettings

__all__ = ["ProjectedAck", "SinkConnector", "SinkMetrics"]

log = get_logger(__name__)

#: How long a retriable offset-commit refusal is retried before it stops the sink.
_COMMIT_PATIENCE_S = 60.0
#: Offset-commit refusals that mean the group has moved on without this sink's session (it
#: timed out while a coordinator moved, or a rebalance began): not asked again. Refusing a
#: batch's last commit, they are left to the replay: its rows are durable and its intent is
#: committed, so whoever owns the partitions next (this sink, rejoined) replays it from the
#: intent, as after a crash (sink/batches.py). Refusing an intent (nothing of its batch is
#: inserted yet, and its records are read past), they make the sink rejoin the group in
#: process (:class:`_GroupMovedOn`), as a restart would: what was read and not made durable
#: is dropped, and each partition is read again from its committed offset and intent.
_GROUP_MOVED_ON = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
    }
)


def commit_refusal(error: KafkaError | None) -> str:
    """What to do about an offset commit refused with ``error``: ``"retry"`` (the
    coordinator is moving), ``"moved-on"`` (the group went on without this session: leave
    the batch to its replay) or ``"fail"`` (anything else: stop the sink, naming it)."""
    code = error.code() if isinstance(error, KafkaError) else None
    if code in COORDINATOR_MOVING:
        return "retry"
    if code in _GROUP_MOVED_ON:
        return "moved-on"
    return "fail"


_MAX_BACKOFF_S = 5.0
_TIMEOUT = 30.0
#: Records per ``consume`` call: one call per this many records, not per record.
_CONSUME_BATCH = 10_000
_GC_THRESHOLD0 = 50_000


class _GroupMovedOn(RetryableError):
    """A batch's intent was refused: the group went on without this sink's session."""


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


class SinkConnector:
    """Runs one connector spec; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        spec: ConnectorSpec,
        context: BoundedContext,
        kafka: KafkaSettings,
        codec: AvroCodec,
        target: SinkTarget,
        metrics: SinkMetrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
        hold_file: Path | None = None,
    ) -> None:
        """``hold_file`` is a test hook (unset in production): while that file exists, the
        sink holds each flush right before it commits the flush's intents (and writes
        ``<file>.held``), so a test can pause it there."""
        self.spec = spec
        self.context = context
        self.kafka = kafka
        self.codec = codec
        self.target = target
        self.metrics = metrics or SinkMetrics()
        self._sleep = sleep
        self._hold_file = hold_file
        self.sources: dict[str, Source] = {}
        self.tables: list[TableSpec] = list(context_tables(context))
        by_kind = {t.kind: t for t in self.tables}
        framed = target.decodes_avro
        for aggregate in spec.select(context):
            topics = aggregate_topics(context.name, aggregate.name, spec.topic_prefix)
            own = {t.kind: t for t in aggregate_tables(context, aggregate)}
            self.tables += own.values()
            rows = builders_for(context, aggregate, codec)
            events = (own["events"],)
            accepts = {full_name(m, context.namespace): m.__name__ for m in aggregate.events}
            self.sources[topics.events] = Source(
                rows.events(own["events"]),
                events,
                framer=Framer(codec, events, topics.events, accepts) if framed else None,
                order=2,
            )
            state = (own["state_last"], own["state"])
            self.sources[topics.state] = Source(
                rows.state(own["state_last"]),
                state,
                1,
                framer=(
                    Framer(codec, state, topics.state, None, acks=aggregate.name)
                    if framed
                    else None
                ),
            )
            results = (by_kind["command_results"],)
            self.sources[topics.results] = Source(rows.results(), results, 1, order=1)
            self.sources[topics.commands] = Source(
                rows.commands(), (by_kind["command_log"],), order=3
            )
        self.projected_topic = context_topics(context.name, spec.topic_prefix).projected
        self._pending: dict[tuple[str, int], Pending] = {}
        # Replays: per partition, the intent's last offset, (the committed offset, the
        # intent), and the replayed ranges read to their end, waiting for their batch.
        self._bounds: dict[tuple[str, int], int] = {}
        self._intents: dict[tuple[str, int], tuple[int, Intent]] = {}
        self._replayed: dict[tuple[str, int], Pending] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._inserter: ThreadPoolExecutor | None = None
        self._inflight: tuple[Future[None], list[Batch], float] | None = None
        self._ack_writer = codec.writer(self.projected_topic, ProjectedAck, RESULT_NAMESPACE)
        self._running = False
        self._started = False
        self._joined = False  # the group gave this sink its first assignment (maybe empty)
        self._target_up = True
        self._abandoning = False  # rejoining: the rebalance callbacks commit nothing
        self.rejoins = Rejoins()  # after its group moved on
        self.flushed_batches = 0
        self.records_read = 0  # records (with errors and EOFs) that consume returned

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
        replication = admin.default_replication()
        admin.create_topics([TopicSpec(self.projected_topic, partitions, replication)])
        self._producer = Producer(self.kafka.producer_config(**{"linger.ms": 5}))
        self._inserter = ThreadPoolExecutor(1, thread_name_prefix="sink-insert")
        self._join()
        self._started = True
        log.info(
            "sink started",
            connector=self.spec.name,
            target=self.target.describe(),
            database=self.target.database,
            topics=list(self.sources),
        )

    def _join(self) -> None:
        """A consumer of the source topics, subscribed: it joins the group at its first poll."""
        self._consumer = Consumer(
            self.kafka.consumer_config(
                self.spec.group_id,
                **self.spec.membership_config(),
                # A fetch waits at most 100 ms for records (librdkafka's default: 500): the
                # records of the acks' path are on their way to ClickHouse sooner.
                **{
                    "max.poll.interval.ms": 600_000,
                    "fetch.queue.backoff.ms": 10,
                    "fetch.wait.max.ms": 100,
                },
            )
        )
        self._consumer.subscribe(
            list(self.sources),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _rejoin(self, moved_on: _GroupMovedOn) -> None:
        """Leave the group's view behind and join again, in process (see ``_GROUP_MOVED_ON``).

        Nothing is in flight (a flush drains the one before it first) and nothing is
        committed: the pending rows and the replays under way are dropped, the consumer is
        closed, and a new one rejoins, reading every partition it is given from its
        committed offset and intent, as a restarted sink would.
        """
        assert self._consumer is not None
        over = self.rejoins.spend()
        if over is not None:
            raise _GroupMovedOn(f"the group moved on {over}: {moved_on}") from moved_on
        log.warning(
            "a batch's intent was refused: the group moved on; rejoining",
            connector=self.spec.name,
            error=str(moved_on),
        )
        self._pending.clear()
        self._bounds.clear()
        self._intents.clear()
        self._replayed.clear()
        self._joined = False
        self._abandoning = True
        try:
            self._consumer.close()
        finally:
            self._abandoning = False
        self._join()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Read, frame and insert until :meth:`stop` (or ``until()``).

        While it runs, the garbage collector's first threshold is at least
        ``_GC_THRESHOLD0`` allocations (the interpreter's default is 700; it is put back
        after). The loop allocates a few container objects per record: the consumer's
        message, its header list and tuples, a dict. At 700 the collector ran every ~150
        records, and each consume batch's 10,000 live messages went through every
        generation. In ``benchmarks/sink_bench.py``'s setting, three interleaved rounds of
        600k events ran at 74k, 90k and 85k rows/s with the default, and at 142k, 118k and
        105k with 50,000.
        """
        if self._consumer is None:
            self.start()
        self._running = True
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], _GC_THRESHOLD0), *thresholds[1:])
        try:
            while self._running and not (until is not None and until()):
                try:
                    self.step()
                except _GroupMovedOn as exc:
                    self._rejoin(exc)
            # What is read is made durable, except a replay not made durable yet (and what
            # follows it): it must keep its range (the next run reads it again).
            try:
                self.flush([key for key in self._pending if key not in self._bounds])
            except _GroupMovedOn as exc:  # their next owner reads them again
                log.warning("the last batch's intent was refused; left unread", error=str(exc))
            self._drain()
        finally:
            gc.set_threshold(*thresholds)
            self.close()

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        if self._inflight is not None:  # closing on an error: let the inserts end, commit nothing
            future = self._inflight[0]
            self._inflight = None
            error = future.exception()
            if error is not None:
                log.error("a batch's inserts failed while the sink closed", error=str(error))
        if self._consumer is not None:
            self._consumer.close()  # its revocation may still hand a replay to the inserter
            self._consumer = None
        if self._inserter is not None:
            self._inserter.shutdown(wait=True)
            self._inserter = None
        self._inflight = None  # nothing is committed after the consumer closed
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        self._started = self._joined = False

    @property
    def ready(self) -> bool:
        """Started, joined the group (its first assignment received: the group's first join
        takes about a second, and records produced meanwhile would wait that long for their
        PROJECTED ack), and ClickHouse answered the last time the sink asked."""
        return self._started and self._joined and self._target_up

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        """Read what is there; flush what is due.

        Two classes of source topic: the ones PROJECTED acks wait for (state, results) are
        due ``batch_interval_ms`` after their oldest pending record, the append-only logs
        (events, commands) ``log_interval_ms`` after theirs; a class is due at once when a
        partition of it holds ``batch_rows``. A due class is flushed whole (one insert per
        table); the logs go along with an acked flush when they would be due before the
        next one. So a flush on the acks' path usually inserts three tables, not five.
        """
        assert self._consumer is not None
        if self._inflight is not None and self._inflight[0].done():
            self._drain()
        try:
            messages = self._consumer.consume(_CONSUME_BATCH, 0.05)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "reading the projected topics") from exc
        self.records_read += len(messages)
        now = time.monotonic()
        full: set[bool] = set()  # the classes (acked or not) with a partition at batch_rows
        limit = self.spec.batch_rows
        all_pending, bounds = self._pending, self._bounds
        # A fetch returns runs of one partition's records: the run's pending rows are
        # looked up once per run, unless a replay is under way (it may end inside a run).
        run: tuple[str, int, Source, Pending, RowBuilder] | None = None
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
            if run is not None and run[0] == topic and run[1] == partition and not bounds:
                source, pending, read = run[2], run[3], run[4]
            else:
                key = (topic, partition)
                bound = None
                if bounds and key not in self._replayed:
                    bound = bounds.get(key)
                    if bound is not None and offset > bound:
                        self._replay_read(key)  # the intent's range ended before this record
                source = self.sources[topic]
                found = all_pending.get(key)
                if found is None:
                    found = all_pending[key] = source.pending(offset, now)
                pending, read = found, source.read
                run = (topic, partition, source, pending, read)
            pending.last = offset
            if not read(message, offset, pending):
                self.metrics.skipped.labels(topic).inc()
            if bounds:
                key = (topic, partition)
                bound = bounds.get(key) if key not in self._replayed else None
                if bound is not None and offset == bound:
                    self._replay_read(key)  # the replayed range is complete: exactly as before
                    run = None
                    continue
                if key in bounds:
                    continue
            if pending.rows >= limit:
                full.add(source.acked_by > 0)
        oldest: dict[bool, float] = {}
        for key, pending in self._pending.items():
            if key not in self._bounds:
                acked = self.sources[key[0]].acked_by > 0
                oldest[acked] = min(oldest.get(acked, pending.since), pending.since)
        acked_interval = self.spec.batch_interval_ms / 1000
        log_interval = self.spec.log_interval_ms / 1000
        flush_acked = True in oldest and (True in full or now - oldest[True] >= acked_interval)
        ahead = acked_interval if flush_acked else 0.0
        flush_logs = False in oldest and (
            False in full or now - oldest[False] + ahead >= log_interval
        )
        if flush_acked or flush_logs:
            classes = {c for c, flag in ((True, flush_acked), (False, flush_logs)) if flag}
            self.flush(
                sorted(
                    k
                    for k in self._pending
                    if k not in self._bounds and (self.sources[k[0]].acked_by > 0) in classes
                )
            )

    def flush(self, keys: list[tuple[str, int]]) -> None:
        """Make the pending rows of ``keys`` durable: one batch per topic (one insert per
        table for all its partitions' ranges), see :meth:`_make_durable`."""
        by_topic: dict[str, list[tuple[int, Pending]]] = {}
        for key in keys:
            pending = self._pending.pop(key, None)
            if pending is not None:
                by_topic.setdefault(key[0], []).append((key[1], pending))
        self._make_durable([Batch(t, sorted(m, key=lambda x: x[0])) for t, m in by_topic.items()])

    def _make_durable(self, batches: list[Batch], *, check_landed: bool = False) -> None:
        """Intents, inserts, acks, offsets; the inserts and acks on the insert thread.

        The intents are committed here, then the inserts (:meth:`_insert_batches`) run on
        the sink's insert thread while this thread reads on: ClickHouse does its work
        without the GIL (chDB in this process, or a server), so reading, framing and
        inserting overlap. One flush is in flight at a time; its offsets are committed by
        :meth:`_drain` on this thread (the consumer's only thread), before the next flush's
        intents, when a step finds it done, on a rebalance and at the end of a run. A
        failed insert is raised there.
        """
        if not batches:
            return
        self._drain()
        started = time.monotonic()
        self._hold_if_asked()
        # 1. the intents (a replay re-forms exactly these batches)
        self._commit(
            [
                TopicPartition(b.topic, p, r.first, intent(r.last, b.group, len(b.members)))
                for b in batches
                for p, r in b.members
            ],
            intents=True,
        )
        # 2. the inserts and acks, on the insert thread
        assert self._inserter is not None, "start() first"
        future = self._inserter.submit(self._insert_batches, batches, check_landed)
        self._inflight = (future, batches, started)

    def _hold_if_asked(self) -> None:
        if self._hold_file is None or not self._hold_file.exists():
            return
        self._hold_file.with_name(self._hold_file.name + ".held").write_text("held\n")
        log.warning("holding a flush before its intents (test hook)", file=str(self._hold_file))
        while self._hold_file.exists():
            time.sleep(0.05)

    def _insert_batches(self, batches: list[Batch], check_landed: bool) -> None:
        """The inserts of one flush, the acks after the tables they stand for.

        The tables that acks stand for (state_last, command_results) are inserted first, and
        each batch's acks are sent right after its rows are in them, so PROJECTED does not
        wait for the other tables. With ``check_landed`` (a range replayed without the other
        ranges of its batch: its token cannot be formed again) a table that holds rows of the
        range already is left alone: the batch's insert into it landed, atomically.
        """
        later: list[tuple[BatchRows, int, str]] = []
        batches.sort(key=lambda b: (self.sources[b.topic].order, b.topic))
        for batch in batches:
            source = self.sources[batch.topic]
            rows = BatchRows(source, batch)
            for index, table in enumerate(source.tables):
                if check_landed and self._landed(table, batch):
                    continue
                token = batch.token(self.spec.name, table.name)
                if index < source.acked_by:
                    self._insert(rows, index, token)
                else:
                    later.append((rows, index, token))
            for partition, pending in batch.members:
                self._send_acks(pending.acks, partition)
        for rows, index, token in later:
            self._insert(rows, index, token)

    def _drain(self, *, commit: bool = True) -> None:
        """Wait for the flush in flight, then commit its offsets (3.); without ``commit``
        (partitions lost) leave them: their next owner replays the batch from its intents."""
        if self._inflight is None:
            return
        future, batches, started = self._inflight
        self._inflight = None
        future.result()
        if not commit:
            return
        self._commit(
            [TopicPartition(b.topic, p, r.last + 1) for b in batches for p, r in b.members]
        )
        ranges = sum(len(b.members) for b in batches)
        self.metrics.batches.inc(ranges)
        self.metrics.insert_seconds.observe(time.monotonic() - started)
        self.flushed_batches += ranges

    def _landed(self, table: TableSpec, batch: Batch) -> bool:
        ((partition, pending),) = batch.members
        return bool(
            self._retrying(
                lambda: self.target.holds(
                    table, batch.topic, partition, pending.first, pending.last
                ),
                f"reading {table.name}",
            )
        )

    # ------------------------------------------------------------------ replays

    def _replay_read(self, key: tuple[str, int]) -> None:
        """A replayed range is read to its end: keep it for its batch, then try the batches."""
        start, found = self._intents[key]
        pending = self._pending.pop(key, None) or self.sources[key[0]].pending()
        pending.first, pending.last = start, found.last  # the range exactly as intended
        self._replayed[key] = pending
        self._flush_replays()

    def _flush_replays(self) -> None:
        """Make durable each replayed batch whose ranges are all read.

        A batch re-forms from its ranges when this sink owns all of them (the same tokens);
        a range whose batch-mates another sink owns now goes alone, checking each table for
        its rows first (:meth:`_make_durable` with ``check_landed``).
        """
        groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for key, (_start, found) in self._intents.items():
            group = found.group if found.group is not None else f"{key[1]}"
            groups.setdefault((key[0], group), []).append(key)
        for (topic, _group), keys in groups.items():
            found = self._intents[keys[0]][1]
            read = [k for k in keys if k in self._replayed]
            if found.group is not None and len(keys) < found.members:
                for key in read:  # a partial batch: each range alone, checked
                    self._make_durable(
                        [Batch(topic, [(key[1], self._replayed[key])])], check_landed=True
                    )
                    self._end_replay(key)
                    self.metrics.replays.labels("alone").inc()
                continue
            if len(read) < len(keys):
                continue  # wait for the rest of the batch
            members = sorted(((k[1], self._replayed[k]) for k in keys), key=lambda x: x[0])
            self._make_durable([Batch(topic, members)])
            for key in keys:
                self._end_replay(key)
            self.metrics.replays.labels("batch").inc(len(keys))

    def _end_replay(self, key: tuple[str, int]) -> None:
        self._bounds.pop(key, None)
        self._intents.pop(key, None)
        self._replayed.pop(key, None)

    def _insert(self, rows: BatchRows, index: int, token: str) -> None:
        """Insert a batch's rows into the source's table number ``index``: framed for
        ClickHouse to decode when it can, else (or when ClickHouse refuses the framed rows,
        a corrupt record, say) decoded in Python; the same token either way."""
        table = rows.source.tables[index]
        parts = rows.parts(index)
        if parts:
            try:
                self._retrying(
                    lambda: self.target.insert_avro(table, parts, token),
                    f"inserting into {table.name}",
                )
                self.metrics.rows.labels(table.name).inc(rows.count)
                return
            except TargetError as exc:
                rows.python = True
                log.warning(
                    "ClickHouse refused the framed rows; inserting them decoded in Python",
                    table=table.name,
                    token=token,
                    error=str(exc)[:500],
                )
        columns = rows.columns()
        if not columns:
            return
        self._retrying(
            lambda: self.target.insert_columns(table, columns, token),
            f"inserting into {table.name}",
        )
        self.metrics.rows.labels(table.name).inc(len(columns[-1]))

    def _send_acks(self, acks: list[Ack], partition: int) -> None:
        """The PROJECTED acks of one batch, on its partition number of the acks topic."""
        if not acks or not self.spec.acks or self._producer is None:
            return
        now = datetime.now(UTC)
        encode = self._ack_writer.encode_dict
        for ack in acks:
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
            produce(
                self._producer,
                self.projected_topic,
                value,
                ack.command_id.encode(),
                partition=partition,
                on_delivery=self._ack_delivered,
            )
        self._producer.poll(0)
        self.metrics.acks.inc(len(acks))

    def _ack_delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:  # the rows are durable; only the signal is lost (callers time out)
            self.metrics.ack_failures.inc()
            log.warning("PROJECTED ack not delivered", error=str(err), key=message.key())

    def _commit(self, offsets: list[TopicPartition], *, intents: bool = False) -> None:
        """Commit the offsets (see :func:`commit_refusal` for a refusal): one that only
        means the group's coordinator is moving with a lost broker is asked again, for up to
        a minute, before it stops the sink; one that means the group moved on is left to the
        batch's replay, unless these are the ``intents``: then the sink rejoins
        (see ``_GROUP_MOVED_ON``)."""
        assert self._consumer is not None
        deadline = time.monotonic() + _COMMIT_PATIENCE_S
        while True:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                what = commit_refusal(exc.args[0] if exc.args else None)
                if what == "moved-on" and intents:
                    raise _GroupMovedOn(f"committing a batch's intent: {exc}") from exc
                if what == "moved-on":
                    log.warning(
                        "offsets not committed: the group moved on; the batch is replayed"
                        " from its intent",
                        error=str(exc),
                    )
                    return
                if what != "retry" or time.monotonic() > deadline:
                    raise translate_kafka_error(exc, "committing sink offsets") from exc
                log.warning("offset commit refused for now; retrying", error=str(exc))
                time.sleep(0.5)

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
        self._joined = True  # cooperative-sticky calls this on every join, with [] if need be
        for tp in consumer.committed(partitions, timeout=_TIMEOUT):
            found = parse_intent(tp.metadata)
            if found is not None:
                key = (tp.topic, tp.partition)
                self._bounds[key] = found.last
                self._intents[key] = (tp.offset, found)
                log.info(
                    "replaying an unfinished batch",
                    topic=tp.topic,
                    partition=tp.partition,
                    first=tp.offset,
                    last=found.last,
                    group=found.group,
                    ranges=found.members,
                )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._abandoning:
            return
        self._drain(commit=False)  # the group has moved on: commits would be refused
        self._forget(partitions)
        self._drain(commit=False)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._abandoning:
            return  # rejoining: nothing is in flight, and what was read is dropped
        self._drain()  # what is in flight is made durable while the partitions are ours
        self._forget(partitions)
        self._drain()  # and the replays of the ranges that stay

    def _forget(self, partitions: list[TopicPartition]) -> None:
        # Not durable, not committed: the next owner reads these records again.
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)
            self._end_replay((tp.topic, tp.partition))
        if self._intents:
            self._flush_replays()  # a batch may have lost ranges to another sink
