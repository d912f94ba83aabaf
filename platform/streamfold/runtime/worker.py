"""The aggregate worker: consume commands, decide, and emit everything in one transaction.

One worker process runs the aggregates of a topology. It consumes their commands topics in
one consumer group (cooperative-sticky), keeps one RocksDB store per assigned partition, and
owns ONE transactional producer whose ``transactional.id`` is ``<group>.<instance_id>``, so a
restarted instance fences its zombie.

The checkpoint (:meth:`AggregateWorker._commit`) is the unit of atomicity. A transaction holds
many commands; it commits when ``max_batch`` commands are in it, when it has been open for
``commit_interval_ms``, or as soon as the consumer has nothing more to give right now (so a
lone command is answered at once). A transaction begins no sooner than
``transaction_gap_ms`` after the previous one ended (see that setting): records of a batch
produced before then are held in memory, and the first record after the gap begins the
transaction and sends them. The checkpoint's steps:

1. send each touched aggregate's latest entry to its changelog partition, then flush the
   producer (every record of the batch acknowledged; the changelog offsets known);
2. ``send_offsets_to_transaction`` with the consumer's group metadata (exactly-once v2);
3. ``commit_transaction``;
4. only now write each touched store's staged entries with its last changelog offset in one
   RocksDB WriteBatch.

On a failure that requires an abort: abort the transaction (if it had begun), drop the
staged entries and the held records, and rewind each partition of the batch to its first
offset, so the batch is processed again. A fenced producer (another instance with this id,
or the group moved on) stops the worker: it must not write again.

Assignment opens the partitions' stores and restores them from their changelogs
(:mod:`streamfold.runtime.restore`) while the partitions stay paused; other partitions keep
processing. Revocation commits the open transaction (or aborts it when the partitions were
lost) and closes the stores. SIGTERM: stop reading, commit, close the stores, leave the group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import RegistryUnavailableError
from streamfold.domain.context import BoundedContext
from streamfold.domain.naming import aggregate_topics, context_topics
from streamfold.errors import PermanentError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.runtime.headers import Headers
from streamfold.runtime.memory import release_free_memory
from streamfold.runtime.processor import CommandProcessor
from streamfold.runtime.restore import ChangelogRestorer
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import TopologySpec
from streamfold.state.rocksdb import PartitionStore, StoreEnvironment
from streamfold.transport.admin import KafkaAdmin, TopicSpec, translate_kafka_error
from streamfold.transport.settings import KafkaSettings

__all__ = ["AggregateWorker", "FencedError", "WorkerMetricsPort"]

log = get_logger(__name__)

_TIMEOUT = 30.0
#: The broker's transaction.abort.timed.out.transaction.cleanup.interval.ms (10 s) and a margin.
_TXN_ABORT_CHECK_S = 15.0
_LAG_INTERVAL_S = 5.0


class FencedError(PermanentError):
    """This worker's producer was fenced: another instance owns its work now."""


class WorkerMetricsPort(Protocol):
    """What the worker reports (implemented by streamfold.observability.metrics)."""

    def command(self, aggregate: str, outcome: str, n: int = 1) -> None: ...

    def dead_letter(self, aggregate: str, reason: str) -> None: ...

    def lag(self, topic: str, partition: int, value: int) -> None: ...

    def batch(self, size: int, commit_seconds: float) -> None: ...

    def aborted(self) -> None: ...

    def restore_progress(
        self, topic: str, partition: int, restored: int, remaining: int
    ) -> None: ...

    def partitions(self, assigned: int, restoring: int) -> None: ...

    def forget_partition(self, topic: str, partition: int) -> None: ...


@dataclass(slots=True)
class _Batch:
    """The open transaction: what it touched and where each partition started."""

    started: float = 0.0
    count: int = 0
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    stores: dict[tuple[str, int], PartitionStore] = field(default_factory=dict)
    changelog_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Records held until the transaction begins: (topic, key, value, headers, partition or
    #: -1 for murmur2 of the key).
    held: list[tuple[str, bytes | None, bytes | None, Headers, int]] = field(default_factory=list)
    open: bool = False
    #: Records go straight to the producer (the transaction has begun, or at-least-once).
    sending: bool = False
    in_transaction: bool = False


class AggregateWorker:
    """Runs a topology's aggregates; :meth:`run` until :meth:`stop` (or SIGTERM at the edge)."""

    def __init__(
        self,
        topology: TopologySpec,
        context: BoundedContext,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        codec: AvroCodec,
        metrics: WorkerMetricsPort,
    ) -> None:
        self.topology = topology
        self.context = context
        self.settings = settings
        self.kafka = kafka
        self.codec = codec
        self.metrics = metrics
        self.aggregates = topology.select(context)
        self.group_id = f"{settings.topic_prefix}{topology.group_id}"
        self.processors: dict[str, CommandProcessor] = {}
        self.changelogs: dict[str, str] = {}  # commands topic -> changelog topic
        self.stores: dict[tuple[str, int], PartitionStore] = {}
        self.ready_partitions: set[tuple[str, int]] = set()
        self._environment = StoreEnvironment(settings.rocksdb)
        self._batch = _Batch()
        self._running = False
        self._started = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._restorer: ChangelogRestorer | None = None
        self._fenced: BaseException | None = None
        self._callback_error: Exception | None = None
        self._joined = False
        self._next_lag_report = 0.0
        self._aborted_partitions: set[tuple[str, int]] | None = None
        self._held_back: dict[tuple[str, int], int] = {}
        self._quiet_until = 0.0  # no transaction begins before (see transaction_gap_ms)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create missing topics, register schemas, join the group, init transactions."""
        self._ensure_topics()
        for aggregate in self.aggregates:
            processor = CommandProcessor(
                aggregate,
                self.context.namespace,
                self.codec,
                topic_prefix=self.settings.topic_prefix,
                idempotency_window=self.settings.idempotency_window,
                handler_retries=self.settings.handler_retries,
                counters=self.metrics,
            )
            self.processors[processor.topics.commands] = processor
            self.changelogs[processor.topics.commands] = processor.topics.changelog
        transactional_id = f"{self.group_id}.{self.settings.instance_id}"
        tuning = {
            "linger.ms": 2,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
        }
        if self.settings.exactly_once:
            self._producer = Producer(
                self.kafka.transactional_producer_config(
                    transactional_id,
                    **{"transaction.timeout.ms": self.settings.transaction_timeout_ms, **tuning},
                )
            )
            try:
                self._producer.init_transactions(_TIMEOUT)
            except KafkaException as exc:
                doing = f"initialising transactions ({transactional_id})"
                raise translate_kafka_error(exc, doing) from exc
        else:
            self._producer = Producer(self.kafka.producer_config(**tuning))
        overrides: dict[str, Any] = {
            "session.timeout.ms": self.settings.session_timeout_ms,
            "max.poll.interval.ms": self.settings.max_poll_interval_ms,
            "fetch.wait.max.ms": 20,
            # The prefetch queue counts in the RSS; 16 MiB keeps thousands of commands ready.
            "queued.max.messages.kbytes": self.settings.consumer_prefetch_mb * 1024,
            # A full prefetch queue pauses fetching for fetch.queue.backoff.ms (1 s by
            # default): far longer than the worker takes to drain it.
            "fetch.queue.backoff.ms": 10,
        }
        if self.settings.static_membership:
            overrides["group.instance.id"] = self.settings.instance_id
        self._consumer = Consumer(self.kafka.consumer_config(self.group_id, **overrides))
        self._restorer = ChangelogRestorer(
            self.kafka,
            self.metrics,
            self.settings.restore_batch,
            self.settings.restore_prefetch_mb,
        )
        self._consumer.subscribe(
            list(self.processors),
            on_assign=self._guarded(self._on_assign),
            on_revoke=self._guarded(self._on_revoke),
            on_lost=self._guarded(self._on_lost),
        )
        self._started = True
        log.info(
            "worker started",
            topology=self.topology.name,
            group=self.group_id,
            transactional_id=transactional_id,
            aggregates=[a.name for a in self.aggregates],
        )

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Process until :meth:`stop` is called (or ``until()`` is true), then shut down."""
        if not self._started:
            self.start()
        self._running = True
        try:
            while self._running and not (until is not None and until()):
                self.step()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current step (safe from a signal handler)."""
        self._running = False

    @property
    def ready(self) -> bool:
        """Joined the group, and every partition it was assigned is restored."""
        return (
            self._started
            and self._joined
            and self._restorer is not None
            and self._restorer.restoring == 0
        )

    def close(self) -> None:
        """Commit what is open, close the stores, leave the group."""
        if not self._started:
            return
        self._started = False
        try:
            if self._batch.open and self._fenced is None:
                self._commit()
        finally:
            assert self._consumer is not None and self._restorer is not None
            self._consumer.close()  # leaves the group; revocation closes the stores
            for key in list(self.stores):
                self._close_store(key)
            self._restorer.close()
            if self._producer is not None and self._fenced is None:
                try:
                    self._producer.flush(5)
                except KafkaException as exc:  # fatal now (e.g. fenced): nothing left to send
                    log.warning("producer flush at close failed", error=str(exc))
            log.info("worker stopped", topology=self.topology.name, fenced=self._fenced is not None)

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        """One turn: restore a chunk, process what the consumer has, commit when due."""
        assert self._consumer is not None and self._restorer is not None
        if self._fenced is not None:
            raise FencedError(f"the worker was fenced: {self._fenced}")
        if self._restorer.restoring:
            for topic, partition in self._restorer.step(0.0 if self.ready_partitions else 0.05):
                commands = self._commands_topic(topic)
                self.ready_partitions.add((commands, partition))
                self._consumer.resume([TopicPartition(commands, partition)])
            self._report_partitions()
            if not self._restorer.restoring:
                release_free_memory()  # the restore's buffers are garbage now
        room = self.settings.max_batch - self._batch.count
        self._aborted_partitions = None  # an abort from here on (callbacks too) is seen below
        try:
            messages = self._consumer.consume(room, 0)
            if not messages:
                if self._batch.open:
                    # Nothing more right now: answer what we have, once the gap has passed
                    # (what arrives meanwhile joins the batch).
                    wait = self._quiet_until - time.monotonic()
                    if wait > 0:
                        messages = self._consumer.consume(room, wait)
                    if not messages:
                        self._commit()
                        return
                else:
                    first = self._consumer.poll(0.0 if self._restorer.restoring else 0.1)
                    messages = [first] if first is not None else []
        except KafkaException as exc:
            raise translate_kafka_error(exc, "consuming commands") from exc
        self._raise_callback_error()
        for index, message in enumerate(messages):
            if self._aborted_partitions is not None:
                # The batch was rewound: what follows must be read again after it, in order.
                self._rewind(messages[index:])
                break
            self._process(message)
        if self._held_back:
            self._rewind_held_back()
        if self._batch.open and (
            self._batch.count >= self.settings.max_batch
            or time.monotonic() - self._batch.started >= self.settings.commit_interval_ms / 1000
        ):
            self._commit()
        if time.monotonic() >= self._next_lag_report:
            self._report_lag()

    def _report_lag(self) -> None:
        """Consumer lag per ready partition: end offset (as last fetched) minus position."""
        assert self._consumer is not None
        self._next_lag_report = time.monotonic() + _LAG_INTERVAL_S
        ready = [TopicPartition(t, p) for t, p in self.ready_partitions]
        if not ready:
            return
        try:
            positions = self._consumer.position(ready)
            for tp in positions:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag(tp.topic, tp.partition, max(0, high - tp.offset))
        except KafkaException as exc:
            log.debug("lag not available", error=str(exc))

    def _process(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(error))
            return
        topic, partition, offset = message.topic() or "", message.partition(), message.offset()
        assert partition is not None and offset is not None
        key = (topic, partition)
        store = self.stores.get(key)
        if store is None or key not in self.ready_partitions:
            # Revoked (the next owner reads it) or still restoring (read it again later).
            if store is not None:
                self._held_back.setdefault(key, offset)
            return
        if not self._batch.open:
            self._begin()
        self._batch.first_offsets.setdefault(key, offset)
        self._batch.stores[key] = store
        try:
            self.processors[topic].process(message, store, self)
        except RegistryUnavailableError:
            log.warning("schema registry unavailable; retrying the batch")
            self._abort()
            time.sleep(1.0)
            return
        self._batch.next_offsets[key] = offset + 1
        self._batch.count += 1

    # ------------------------------------------------------------------ Outbox

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Produce a record in the batch's transaction (murmur2 of the key unless ``partition``).

        Until the transaction may begin (``transaction_gap_ms`` after the previous one) the
        record is held; the first record after that begins it and sends what was held.
        """
        batch = self._batch
        where = -1 if partition is None else partition
        if batch.sending:
            self._emit(topic, key, value, headers, where)
            return
        batch.held.append((topic, key, value, headers, where))
        if time.monotonic() >= self._quiet_until:
            try:
                self._begin_transaction(batch)
            except KafkaException as exc:
                self._classify(exc, "beginning a transaction")
                # Try again a little later (at the latest when the batch commits).
                self._quiet_until = time.monotonic() + 0.05
                log.warning("beginning a transaction failed; retrying", error=str(exc))

    def _begin_transaction(self, batch: _Batch) -> None:
        """Begin the batch's transaction (once the gap has passed) and send what was held."""
        assert self._producer is not None
        if not batch.in_transaction:
            wait = self._quiet_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._producer.begin_transaction()
            batch.in_transaction = True
        batch.sending = True
        held, batch.held = batch.held, []
        for record in held:
            self._emit(*record)

    def _emit(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int
    ) -> None:
        """Produce one record of the batch: to ``partition``, or by its key when it is -1."""
        if partition < 0:
            self._produce(topic, key, value, headers=headers)
        else:
            self._produce(topic, key, value, headers=headers, partition=partition)

    def _send_changelogs(self, batch: _Batch) -> None:
        """Send each touched store's staged entries to its changelog partition.

        One record per aggregate (its latest entry); only each partition's last record asks
        for a delivery report, which gives the offset the store records at commit.
        """
        for (topic, partition), store in batch.stores.items():
            changelog = self.changelogs[topic]
            staged = store.staged_items()
            for key, value in staged[:-1]:
                self._produce(changelog, key, value, partition=partition)
            if staged:
                key, value = staged[-1]
                self._produce(
                    changelog,
                    key,
                    value,
                    partition=partition,
                    on_delivery=self._changelog_delivered,
                )

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let deliveries drain

    def _changelog_delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            return  # the transaction will fail to commit and abort
        key = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        if offset > self._batch.changelog_offsets.get(key, -1):
            self._batch.changelog_offsets[key] = offset

    # ------------------------------------------------------------------ transactions

    def _begin(self) -> None:
        sending = not self.settings.exactly_once  # at-least-once: no transaction to wait for
        self._batch = _Batch(started=time.monotonic(), open=True, sending=sending)

    def _commit(self) -> None:
        """The checkpoint; see the module docstring for its steps."""
        assert self._producer is not None and self._consumer is not None
        batch = self._batch
        if not batch.open:
            return
        started = time.monotonic()
        try:
            # 1. the records, the staged entries to the changelogs; every record acknowledged
            if not batch.sending:
                self._begin_transaction(batch)
            self._send_changelogs(batch)
            remaining = self._producer.flush(_TIMEOUT)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out"))
            offsets = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
            if not self.settings.exactly_once:
                # at-least-once: the records are acknowledged; now the offsets
                if offsets:
                    self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                # 2. offsets into the transaction
                if offsets:
                    self._producer.send_offsets_to_transaction(
                        offsets, self._consumer.consumer_group_metadata(), _TIMEOUT
                    )
                # 3. commit
                self._producer.commit_transaction(_TIMEOUT)
        except KafkaException as exc:
            self._classify(exc, "committing")
            log.warning("transaction failed; aborting and reprocessing", error=str(exc))
            self._abort()
            return
        finally:
            self._quiet_until = time.monotonic() + self.settings.transaction_gap_ms / 1000
        # 4. the stores follow the committed transaction
        for (topic, partition), store in batch.stores.items():
            changelog = (self.changelogs[topic], partition)
            store.commit(batch.changelog_offsets.get(changelog))
        self._batch = _Batch()
        self.metrics.batch(batch.count, time.monotonic() - started)

    def _abort(self) -> None:
        assert self._producer is not None and self._consumer is not None
        batch = self._batch
        if not batch.open:
            return
        if not self.settings.exactly_once:
            # Records already sent stay sent (at-least-once); reprocess from the batch start.
            self._producer.flush(_TIMEOUT)
        try:
            if batch.in_transaction:
                self._producer.abort_transaction(_TIMEOUT)
        except KafkaException as exc:
            self._classify(exc, "aborting")
            raise translate_kafka_error(exc, "aborting a transaction") from exc
        finally:
            for store in batch.stores.values():
                store.discard()
            self._batch = _Batch()
        self.metrics.aborted()
        self._seek_assigned(batch.first_offsets)
        self._aborted_partitions = set(batch.first_offsets)

    def _rewind(self, rest: list[Message]) -> None:
        """Seek back to the first of ``rest`` in each partition the abort did not rewind."""
        aborted = self._aborted_partitions or set()
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            if message.error() is None:
                key = (message.topic() or "", message.partition() or 0)
                if key not in aborted:
                    first.setdefault(key, message.offset() or 0)
        self._seek_assigned(first)

    def _rewind_held_back(self) -> None:
        """Seek restoring partitions back to the records read before they were ready."""
        self._seek_assigned(self._held_back)
        self._held_back.clear()

    def _seek_assigned(self, offsets: dict[tuple[str, int], int]) -> None:
        """Seek each partition still assigned to its offset (revoked ones are skipped)."""
        assert self._consumer is not None
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in assigned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _classify(self, exc: KafkaException, doing: str) -> None:
        """Stop for good on a fatal error (fencing); let the caller abort otherwise."""
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and (
            error.fatal()
            or error.code()
            in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
        ):
            self._fenced = exc
            self._running = False
            self._batch = _Batch()
            raise FencedError(f"fenced while {doing}: {error}") from exc

    # ------------------------------------------------------------------ rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._restorer is not None
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)
        self._await_previous_owner(consumer, partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            path = self.settings.state_dir / self.topology.name / tp.topic / str(tp.partition)
            store = PartitionStore(path, self._environment)
            self.stores[key] = store
            if self._restorer.add(self.changelogs[tp.topic], tp.partition, store):
                self.ready_partitions.add(key)
                consumer.resume([tp])
        self._joined = True
        log.info("partitions assigned", partitions=_names(partitions))
        self._report_partitions()

    def _await_previous_owner(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Read the committed offsets: under read_committed this waits for the previous
        owner's open transaction to end, so the changelog ends where that owner stopped
        writing (see restore.py).

        A previous owner that hangs (a paused zombie) leaves its transaction open until the
        broker aborts it: up to ``transaction_timeout_ms`` after it began, plus the
        coordinator's check interval (10 s by default). A timed-out read is therefore asked
        again until that bound has passed, not taken as a failure.
        """
        bound = self.settings.transaction_timeout_ms / 1000 + _TXN_ABORT_CHECK_S
        deadline = time.monotonic() + bound
        while True:
            remaining = deadline - time.monotonic()
            try:
                consumer.committed(partitions, timeout=max(1.0, min(_TIMEOUT, remaining)))
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError._TIMED_OUT or remaining <= 0:
                    raise
                log.warning(
                    "the previous owner's transaction is still open; waiting for it to end",
                    partitions=_names(partitions),
                    waited_up_to_s=round(bound - remaining, 1),
                )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._batch.open and self._fenced is None:
            self._commit()
        for tp in partitions:
            self._close_store((tp.topic, tp.partition))
        log.info("partitions revoked", partitions=_names(partitions))
        self._report_partitions()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._batch.open and self._fenced is None:
            try:
                self._abort()
            except (RetryableError, PermanentError) as exc:
                log.warning("abort after losing partitions failed", error=str(exc))
        for tp in partitions:
            self._close_store((tp.topic, tp.partition))
        log.warning("partitions lost", partitions=_names(partitions))
        self._report_partitions()

    def _guarded(
        self, callback: Callable[[Consumer, list[TopicPartition]], None]
    ) -> Callable[[Consumer, list[TopicPartition]], None]:
        """Keep an exception of a rebalance callback and raise it after the poll returns.

        An exception raised inside a callback would cross librdkafka's C frames mangled.
        """

        def guarded(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            try:
                callback(consumer, partitions)
            except Exception as exc:  # re-raised by _raise_callback_error
                log.exception("rebalance callback failed", callback=callback.__name__)
                self._callback_error = exc

        return guarded

    def _raise_callback_error(self) -> None:
        error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error

    def _close_store(self, key: tuple[str, int]) -> None:
        assert self._restorer is not None
        topic, partition = key
        self._restorer.remove(self.changelogs[topic], partition)
        self.ready_partitions.discard(key)
        self.metrics.forget_partition(topic, partition)
        store = self.stores.pop(key, None)
        if store is not None:
            store.flush()
            store.close()

    def _report_partitions(self) -> None:
        assert self._restorer is not None
        self.metrics.partitions(len(self.stores), self._restorer.restoring)

    # ------------------------------------------------------------------ topics

    def _commands_topic(self, changelog: str) -> str:
        for commands, candidate in self.changelogs.items():
            if candidate == changelog:
                return commands
        raise KeyError(changelog)

    def _ensure_topics(self) -> None:
        admin = KafkaAdmin(self.kafka)
        spec = self.topology.topics
        replication = spec.replication_factor or min(3, max(1, admin.broker_count()))
        partitions = spec.partitions
        prefix = self.settings.topic_prefix
        topics = [TopicSpec(context_topics(self.context.name, prefix).dlq, partitions, replication)]
        for aggregate in self.aggregates:
            names = aggregate_topics(self.context.name, aggregate.name, prefix)
            for name in (names.commands, names.events, names.state, names.results):
                topics.append(TopicSpec(name, partitions, replication))
            topics.append(TopicSpec.compacted(names.changelog, partitions, replication))
        admin.create_topics(topics)
        for aggregate in self.aggregates:
            names = aggregate_topics(self.context.name, aggregate.name, prefix)
            commands = admin.describe(names.commands)
            changelog = admin.describe(names.changelog)
            if len(commands.partitions) != len(changelog.partitions):
                raise PermanentError(
                    f"{names.changelog} has {len(changelog.partitions)} partitions, "
                    f"{names.commands} {len(commands.partitions)}: they must match"
                )


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}/{tp.partition}" for tp in partitions]
