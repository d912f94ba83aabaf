"""The worker: the loop that runs processors over the partitions it owns, and its lifecycle.

One worker process runs the processors of a topology: one
:class:`~streamfold.runtime.command_processor.CommandProcessor` per aggregate, one
:class:`~streamfold.runtime.saga_processor.SagaProcessor` per saga, and the
:class:`~streamfold.runtime.saga_processor.SagaFeed` of each topic the sagas read (events,
and the results of their commands), which keeps no store. It consumes their input topics
in one consumer group (cooperative-sticky), keeps one store per assigned partition of a
processor with state (:class:`~streamfold.state.stores.PartitionStores`), and owns ONE
transactional
producer whose ``transactional.id`` is ``<group>.<instance_id>``, so a restarted instance
fences its zombie. The transaction is the :class:`~streamfold.runtime.checkpoint.Checkpoint`'s:
the worker tracks which inputs a batch holds and when it is due; the checkpoint owns begin,
send, commit, abort and rewind.

Timers (of sagas, and of aggregates that set them) fire from the loop (at most every
``_TIMER_CHECK_S``), each in the open batch like an input.

A batch commits when ``max_batch`` inputs are in it, when it has been open for
``commit_interval_ms``, or as soon as the consumer has nothing more to give right now (so a
lone command is answered at once, once the transaction gap has passed).

Failures: an input whose records cannot be produced is quarantined, the batch aborted and
read again (the input is then dead-lettered whole); a schema registry outage aborts the
batch and retries it a second later. A fenced producer (a successor took this worker's
partitions while it was out of the group: paused, or cut off while a broker was lost) ends
the open batch, which the fence aborted: the worker closes its consumer and stores and
starts again in the same process, with a new producer, and rejoins, as Kafka Streams does
with a migrated task. It stops instead when another member of the group holds its own
instance id (:meth:`~streamfold.runtime.failover.Successor.rival`), or after 5 fences
within 10 minutes (:class:`~streamfold.transport.rejoins.Rejoins`). Any other exception
leaves :meth:`AggregateWorker.run` after the open transaction was ABORTED: a batch is
committed only by a clean stop, never on the way out of a failure.

Assignment first commits the open batch (cooperative-sticky assigns without revoking, and
the wait below can outlast the transaction's timeout), then waits for the partitions'
previous owner, then opens their stores, which restore while the partitions stay paused;
other partitions keep processing. Revocation commits the open transaction (or aborts it
when the partitions were lost) and closes the stores. SIGTERM: stop reading, commit, close
the stores, leave the group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import RegistryUnavailableError
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.domain.naming import aggregate_topics, context_topics, saga_topics
from streamfold.errors import PermanentError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.runtime.checkpoint import (
    DEFAULT_MAX_RECORD_BYTES,
    BatchAbortedError,
    Checkpoint,
    FencedError,
)
from streamfold.runtime.command_processor import CommandProcessor
from streamfold.runtime.failover import Successor, member_client_id, owner_metadata
from streamfold.runtime.memory import release_free_memory
from streamfold.runtime.processor import Processor, UnproducibleRecordError
from streamfold.runtime.rebalance import CallbackGuard
from streamfold.runtime.saga_processor import (
    SagaFeed,
    SagaProcessor,
    namespace_of,
    saga_routes,
)
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.supervisor import RejoiningLoop
from streamfold.runtime.topology import TopologySpec
from streamfold.state.restore import ChangelogRestorer
from streamfold.state.standby import StandbyStores
from streamfold.state.stores import PartitionStores
from streamfold.transport.admin import KafkaAdmin, TopicSpec, translate_kafka_error
from streamfold.transport.rejoins import Rejoins
from streamfold.transport.settings import KafkaSettings

__all__ = ["AggregateWorker", "FencedError", "WorkerMetricsPort"]

log = get_logger(__name__)

_TIMEOUT = 30.0
#: The broker's transaction.abort.timed.out.transaction.cleanup.interval.ms (10 s) and a margin.
_TXN_ABORT_CHECK_S = 15.0
#: Least time between two chunks of the standby stores' changelogs (standby_stores).
_STANDBY_STEP_S = 0.05
#: How long committed offsets may take before a departed previous owner is fenced.
_FIRST_OFFSETS_WAIT_S = 1.0
#: Each later read of them while the previous owner's transaction stays open: a stop asked
#: meanwhile is seen within it.
_OFFSETS_WAIT_S = 1.0
_LAG_INTERVAL_S = 5.0
#: How often the loop looks for due timers (and the idle poll's bound when sagas run).
_TIMER_CHECK_S = 0.02


class WorkerMetricsPort(Protocol):
    """What the worker reports (implemented by streamfold.observability.metrics)."""

    def command(self, aggregate: str, outcome: str, n: int = 1) -> None: ...

    def dead_letter(self, aggregate: str, reason: str) -> None: ...

    def forwarded(self, aggregate: str) -> None: ...

    def lag(self, topic: str, partition: int, value: int) -> None: ...

    def batch(self, size: int, commit_seconds: float) -> None: ...

    def aborted(self) -> None: ...

    def restore_progress(
        self, topic: str, partition: int, restored: int, remaining: int
    ) -> None: ...

    def partitions(self, assigned: int, restoring: int) -> None: ...

    def forget_partition(self, topic: str, partition: int) -> None: ...

    def saga_input(self, saga: str, outcome: str, commands: int = 0) -> None: ...

    def unhandled_outcome(self, saga: str, outcome: str, code: str) -> None: ...

    def timer_fired(self, saga: str, lateness_seconds: float) -> None: ...


class AggregateWorker(RejoiningLoop):
    """Runs a topology's aggregates; :meth:`run` until :meth:`stop` (or SIGTERM at the edge)."""

    def __init__(
        self,
        topology: TopologySpec,
        context: BoundedContext,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        codec: AvroCodec,
        metrics: WorkerMetricsPort,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        self.context = context
        self.settings = settings
        self.kafka = kafka
        self.codec = codec
        self.metrics = metrics
        #: The wall clock saga timers fire by (seconds since the epoch).
        self.clock = clock
        self.aggregates = topology.select(context)
        self.sagas = topology.select_sagas(context)
        self.group_id = f"{settings.topic_prefix}{topology.group_id}"
        self.processors: dict[str, Processor] = {}  # input topic -> its processor
        self.feeds: dict[str, SagaFeed] = {}  # source topic -> the feed of its sagas
        self._timed: list[SagaProcessor | CommandProcessor] = []
        self._next_timer_check = 0.0
        self._running = False
        self._started = False
        self._consumer: Consumer | None = None
        self._checkpoint: Checkpoint | None = None
        self._stores: PartitionStores | None = None
        self._successor: Successor | None = None
        self._standbys: StandbyStores | None = None
        self._next_standby_step = 0.0
        self._transactions_ready = False
        self._callbacks = CallbackGuard()
        self._joined = False
        self._member_id: str | None = None
        #: Assigned in a rebalance callback, taken over by the next step (_take_over); the
        #: flag is up for an assignment of nothing too.
        self._arrived: list[TopicPartition] = []
        self._assigned = False
        self._next_lag_report = 0.0
        self._held_back: dict[tuple[str, int], int] = {}
        self.rejoins = Rejoins()  # after fences

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create missing topics, register schemas, join the group, init transactions."""
        partitions, changelog_ids = self._ensure_topics()
        max_record_bytes = int(
            self.kafka.producer_config().get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES)
        )
        for aggregate in self.aggregates:
            processor = CommandProcessor(
                aggregate,
                self.context.namespace,
                self.codec,
                partitions=partitions[aggregate.name],
                topic_prefix=self.settings.topic_prefix,
                idempotency_window=self.settings.idempotency_window,
                handler_retries=self.settings.handler_retries,
                counters=self.metrics,
                clock=self.clock,
            )
            self.processors[processor.input_topic] = processor
            if processor.has_timers:
                self._timed.append(processor)
        self._add_sagas()
        changelogs = {topic: p.changelog_topic for topic, p in self.processors.items()}
        producer = self._producer()
        self._consumer = Consumer(self.kafka.consumer_config(self.group_id, **self._overrides()))
        self._checkpoint = Checkpoint(
            producer,
            self._consumer,
            changelogs,
            self.metrics,
            exactly_once=self.settings.exactly_once,
            transaction_gap_ms=self.settings.transaction_gap_ms,
            transaction_timeout_ms=self.settings.transaction_timeout_ms,
            max_record_bytes=max_record_bytes,
            pause_file=self.settings.pause_in_transaction_file,
            offset_metadata=owner_metadata(self._transactional_id),
        )
        self._successor = Successor(self.kafka, self.group_id, self._transactional_id)
        restorer = ChangelogRestorer(
            self.kafka,
            self.metrics,
            self.settings.restore_batch,
            self.settings.restore_prefetch_mb,
        )
        self._stores = PartitionStores(
            self.settings.state_dir / self.topology.name,
            self.settings.rocksdb,
            changelogs,
            restorer,
            changelog_ids,
        )
        if self.settings.standby_stores:
            self._standbys = StandbyStores(
                self.kafka,
                self._stores.directory,
                self._stores.environment,
                {changelog: topic for topic, changelog in changelogs.items()},
                changelog_ids,
            )
            self._follow_everything(changelogs.values())
        self._arrived, self._assigned = [], False
        self._consumer.subscribe(
            [*self.processors, *self.feeds],
            on_assign=self._callbacks.guard(self._on_assign),
            on_revoke=self._callbacks.guard(self._on_revoke),
            on_lost=self._callbacks.guard(self._on_lost),
        )
        self._started = True
        log.info(
            "worker started",
            topology=self.topology.name,
            group=self.group_id,
            transactional_id=self._transactional_id,
            aggregates=[a.name for a in self.aggregates],
            sagas=[s.name for s in self.sagas],
            middleware=[_qualname(m) for m in self.context.middlewares],
        )

    def _recover_from(self, fence: FencedError) -> None:
        """After a fence (the worker is closed): make ready to start again, or re-raise."""
        assert self._successor is not None
        over = self.rejoins.spend()
        if over is not None:
            raise FencedError(f"fenced {over}: {fence}") from fence
        rival = self._successor.rival(self._member_id)
        if rival is not None:
            raise FencedError(
                f"another member of {self.group_id} ({rival}) runs with this worker's instance"
                f" id {self.settings.instance_id!r}: {fence}"
            ) from fence
        log.warning(
            "the worker was fenced; rejoining with a new producer",
            topology=self.topology.name,
            transactional_id=self._transactional_id,
            error=str(fence)[:300],
        )
        self.processors.clear()
        self.feeds.clear()
        self._timed.clear()
        self._held_back.clear()
        self._transactions_ready = False
        self._joined = False
        self._callbacks = CallbackGuard()

    def _add_sagas(self) -> None:
        """A processor per saga, and a feed per topic the sagas read."""
        prefix = self.settings.topic_prefix
        events: dict[str, dict[Any, tuple[Any, ...]]] = {}
        namespaces: dict[str, str] = {}
        outcomes: dict[str, list[Any]] = {}
        for saga in self.sagas:
            processor = SagaProcessor(
                saga,
                self.context,
                self.codec,
                topic_prefix=prefix,
                handler_retries=self.settings.handler_retries,
                metrics=self.metrics,
                clock=self.clock,
            )
            self.processors[processor.input_topic] = processor
            self._timed.append(processor)
            sources, targets = saga_routes(saga, self.context)
            for event, aggregate in sources.items():
                topic = aggregate_topics(aggregate.context, aggregate.name, prefix).events
                types = events.setdefault(topic, {})
                types[saga] = (*types.get(saga, ()), event)
                namespaces[topic] = namespace_of(aggregate, saga, self.context)
            for aggregate in dict.fromkeys(targets.values()):
                topic = aggregate_topics(aggregate.context, aggregate.name, prefix).results
                outcomes.setdefault(topic, []).append(saga)
        dlq = context_topics(self.context.name, prefix).dlq
        for topic, by_saga in events.items():
            self.feeds[topic] = SagaFeed(
                topic,
                self.codec,
                dlq_topic=dlq,
                events=by_saga,
                namespace=namespaces[topic],
                topic_prefix=prefix,
                metrics=self.metrics,
            )
        for topic, sagas in outcomes.items():
            if topic in self.feeds:
                raise PermanentError(f"{topic} cannot be both an events and a results topic")
            self.feeds[topic] = SagaFeed(
                topic,
                self.codec,
                dlq_topic=dlq,
                outcomes=sagas,
                topic_prefix=prefix,
                metrics=self.metrics,
            )

    @property
    def _transactional_id(self) -> str:
        return f"{self.group_id}.{self.settings.instance_id}"

    def _producer(self) -> Producer:
        tuning = {
            "linger.ms": 2,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
        }
        if not self.settings.exactly_once:
            return Producer(self.kafka.producer_config(**tuning))
        producer = Producer(
            self.kafka.transactional_producer_config(
                self._transactional_id,
                **{"transaction.timeout.ms": self.settings.transaction_timeout_ms, **tuning},
            )
        )
        return producer

    def _init_transactions(self) -> None:
        """Initialise the producer's transactions (once, in the first assignment): this fences
        a zombie of this instance and ends its open transaction. Only a member of the group
        does it, so another worker never fences one that is starting (runtime/failover.py)."""
        assert self._checkpoint is not None
        if self._transactions_ready or not self.settings.exactly_once:
            return
        try:
            self._checkpoint.producer.init_transactions(_TIMEOUT)
        except KafkaException as exc:
            doing = f"initialising transactions ({self._transactional_id})"
            raise translate_kafka_error(exc, doing) from exc
        self._transactions_ready = True

    def _overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {
            "client.id": member_client_id(self.kafka.client_id, self._transactional_id),
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 4),
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
        return overrides

    @property
    def ready(self) -> bool:
        """Joined the group, and every partition it was assigned is taken over (its previous
        owner done) and restored."""
        return (
            self._started
            and self._joined
            and not self._assigned
            and self._stores is not None
            and self._stores.restoring == 0
        )

    @property
    def ready_partitions(self) -> set[tuple[str, int]]:
        return self._stores.ready_partitions if self._stores is not None else set()

    def close(self, *, commit: bool = True) -> None:
        """Commit what is open (unless ``commit`` is false: then abort it), close the
        stores, leave the group."""
        if not self._started:
            return
        self._started = False
        checkpoint, stores, consumer = self._checkpoint, self._stores, self._consumer
        assert checkpoint is not None and stores is not None and consumer is not None
        try:
            if checkpoint.open and checkpoint.fenced is None:
                if commit:
                    checkpoint.commit()
                else:
                    checkpoint.abort_on_failure("the worker stops on an error")
        finally:
            consumer.close()  # leaves the group; revocation closes the stores
            for topic, partition in stores.partitions():
                self._close_store(topic, partition)
            stores.close_all()
            if self._standbys is not None:
                self._standbys.close()
            if self._successor is not None:
                self._successor.close()
            checkpoint.flush_at_close()
            fenced = checkpoint.fenced is not None
            log.info("worker stopped", topology=self.topology.name, fenced=fenced)

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        """One turn: restore a chunk, process what the consumer has, commit when due."""
        consumer, checkpoint, stores = self._consumer, self._checkpoint, self._stores
        assert consumer is not None and checkpoint is not None and stores is not None
        if checkpoint.fenced is not None:
            raise FencedError(f"the worker was fenced: {checkpoint.fenced}")
        if self._assigned:
            self._take_over()
        if self._standbys is not None and time.monotonic() >= self._next_standby_step:
            self._standbys.step(0.0)
            self._next_standby_step = time.monotonic() + _STANDBY_STEP_S
        if stores.restoring:
            for topic, partition in stores.step(0.0 if stores.ready_partitions else 0.05):
                consumer.resume([TopicPartition(topic, partition)])
            self._report_partitions()
            if not stores.restoring:
                release_free_memory()  # the restore's buffers are garbage now
        room = self.settings.max_batch - checkpoint.count
        checkpoint.rewound = None  # an abort from here on (callbacks too) is seen below
        try:
            messages = consumer.consume(room, 0)
            if not messages:
                if checkpoint.open:
                    # Nothing more right now: answer what we have, once the gap has passed
                    # (what arrives meanwhile joins the batch).
                    wait = checkpoint.gap_left()
                    if wait > 0:
                        messages = consumer.consume(room, wait)
                    if not messages:
                        checkpoint.commit()
                        return
                else:
                    idle = _TIMER_CHECK_S if self._timed else 0.1
                    first = consumer.poll(0.0 if stores.restoring else idle)
                    messages = [first] if first is not None else []
        except KafkaException as exc:
            raise translate_kafka_error(exc, "consuming commands") from exc
        self._callbacks.raise_pending()
        for index, message in enumerate(messages):
            if checkpoint.rewound is not None:
                # The batch was rewound: what follows must be read again after it, in order.
                self._rewind(messages[index:])
                break
            self._process(message)
        if self._held_back:
            checkpoint.seek(self._held_back)
            self._held_back.clear()
        if self._timed and time.monotonic() >= self._next_timer_check:
            self._fire_timers()
        if checkpoint.open and (
            checkpoint.count >= self.settings.max_batch
            or checkpoint.age() >= self.settings.commit_interval_ms / 1000
        ):
            checkpoint.commit()
        if time.monotonic() >= self._next_lag_report:
            self._report_lag()

    def _fire_timers(self) -> None:
        """Fire the due timers of the ready saga partitions, each in the open batch."""
        checkpoint, stores = self._checkpoint, self._stores
        assert checkpoint is not None and stores is not None
        self._next_timer_check = time.monotonic() + _TIMER_CHECK_S
        for processor in self._timed:
            topic = processor.input_topic
            for t, partition in list(stores.ready_partitions):
                if t != topic:
                    continue
                store = stores.ready(topic, partition)
                room = self.settings.max_batch - checkpoint.count
                if store is None or room <= 0:
                    continue
                for index_key in processor.due(store, room):
                    checkpoint.touch(topic, partition, store)
                    fired = self._input(partial(processor.fire, store, checkpoint, index_key))
                    if not fired or checkpoint.rewound is not None:
                        return

    def _process(self, message: Message) -> None:
        checkpoint, stores = self._checkpoint, self._stores
        assert checkpoint is not None and stores is not None
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(error))
            return
        topic, partition, offset = message.topic() or "", message.partition(), message.offset()
        assert partition is not None and offset is not None
        feed = self.feeds.get(topic)
        if feed is not None:
            checkpoint.track(topic, partition, offset, None)
            if self._input(partial(feed.process, message, checkpoint)):
                checkpoint.done(topic, partition, offset)
            return
        store = stores.ready(topic, partition)
        if store is None:
            # Revoked (the next owner reads it) or still restoring (read it again later).
            if stores.get(topic, partition) is not None:
                self._held_back.setdefault((topic, partition), offset)
            return
        checkpoint.track(topic, partition, offset, store)
        if self._input(partial(self.processors[topic].process, message, store, checkpoint)):
            checkpoint.done(topic, partition, offset)

    def _input(self, process: Callable[[], object]) -> bool:
        """Process one input (a record, a timer) in the open batch; False when it failed:
        a record that cannot be produced quarantines its input and aborts the batch (it is
        dead-lettered when read again), an abort has rewound already, and a registry outage
        aborts the batch and retries it a second later."""
        checkpoint = self._checkpoint
        assert checkpoint is not None
        try:
            process()
        except UnproducibleRecordError as exc:
            checkpoint.reject(exc)
            return False
        except BatchAbortedError:
            return False
        except RegistryUnavailableError:
            log.warning("schema registry unavailable; retrying the batch")
            checkpoint.abort()
            time.sleep(1.0)
            return False
        return True

    def _rewind(self, rest: list[Message]) -> None:
        """Seek back to the first of ``rest`` in each partition the abort did not rewind."""
        assert self._checkpoint is not None
        aborted = self._checkpoint.rewound or set()
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            if message.error() is None:
                key = (message.topic() or "", message.partition() or 0)
                if key not in aborted:
                    first.setdefault(key, message.offset() or 0)
        self._checkpoint.seek(first)

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

    # ------------------------------------------------------------------ rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the partitions, paused; the next step takes them over (:meth:`_take_over`).

        Nothing transactional happens in here. A rebalance callback holds the group's
        rebalance up while it runs, and a transactional call can wait on that rebalance:
        with another member joining meanwhile, ``send_offsets_to_transaction`` made here
        was seen not to return until its 45 s bound fenced the worker.
        """
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)
        self._arrived.extend(partitions)
        self._assigned = True
        self._joined = True
        self._member_id = consumer.memberid()

    def _take_over(self) -> None:
        """Take over the partitions assigned since the last step: commit the open batch,
        wait for their previous owner, open their stores and resume those that are ready.

        Cooperative-sticky assigns without revoking, so the open batch (of partitions this
        worker keeps) is committed first: the wait for the previous owner can take longer
        than its own transaction may stay open. An assignment of nothing (a member that
        joins gets nothing in the first of cooperative-sticky's two rebalances) only
        initialises the producer's transactions, the first time.
        """
        consumer, checkpoint, stores = self._consumer, self._checkpoint, self._stores
        assert consumer is not None and checkpoint is not None and stores is not None
        # ``_assigned`` stays true until the stores are open: /readyz (another thread) must
        # not answer 200 while the previous owner is awaited and nothing is restoring yet.
        arrived, self._arrived = self._arrived, []
        if not arrived:
            self._init_transactions()
            self._assigned = False
            return
        if checkpoint.open and checkpoint.fenced is None:
            checkpoint.commit()
        try:
            previous_owner_done = self._await_previous_owner(consumer, arrived)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "reading the committed offsets") from exc
        if not previous_owner_done:  # stopping: the partitions stay paused, never opened
            self._arrived[:0] = arrived
            return
        for tp in arrived:
            if self._standbys is not None and tp.topic in stores.changelogs:
                self._standbys.release(stores.changelogs[tp.topic], tp.partition)
            if tp.topic in self.feeds or stores.open(tp.topic, tp.partition):
                consumer.resume([tp])
        self._assigned = False
        log.info("partitions assigned", partitions=_names(arrived))
        self._report_partitions()

    def _await_previous_owner(self, consumer: Consumer, partitions: list[TopicPartition]) -> bool:
        """Read the committed offsets: under read_committed this waits for the previous
        owner's open transaction to end, so the changelog ends where that owner stopped
        writing (see state/restore.py). False when the worker was asked to stop meanwhile:
        a SIGTERM never waits for another worker's transaction.

        A previous owner that has left the group is fenced first, which ends its open
        transaction at once (runtime/failover.py); so is one whose offsets still do not come
        within a second (it left while this worker was looking). A previous owner that cannot be
        named leaves its transaction open until the broker aborts it: up to
        ``transaction_timeout_ms`` after it began, plus the coordinator's check interval
        (10 s by default). A timed-out read is therefore asked again until that bound has
        passed, not taken as a failure.
        """
        assert self._successor is not None
        self._init_transactions()
        fencing = self.settings.exactly_once  # at-least-once leaves no transaction open
        if fencing:
            self._successor.take_over(partitions)
        bound = self.settings.transaction_timeout_ms / 1000 + _TXN_ABORT_CHECK_S
        deadline = time.monotonic() + bound
        first, warned = True, False
        while not self._stop_asked:
            remaining = deadline - time.monotonic()
            wait = _FIRST_OFFSETS_WAIT_S if first else _OFFSETS_WAIT_S
            try:
                consumer.committed(partitions, timeout=wait)
                return True
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError._TIMED_OUT or remaining <= 0:
                    raise
            if first:
                first = False
                if fencing and self._successor.take_over(partitions):
                    continue
            if not warned:
                warned = True
                log.warning(
                    "the previous owner's transaction is still open; waiting for it to end",
                    partitions=_names(partitions),
                    waited_up_to_s=round(bound - remaining, 1),
                )
        return False

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._checkpoint is not None
        self._forget_arrived(partitions)
        if self._checkpoint.open and self._checkpoint.fenced is None:
            self._checkpoint.commit()
        for tp in partitions:
            self._close_store(tp.topic, tp.partition)
        log.info("partitions revoked", partitions=_names(partitions))
        self._report_partitions()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._checkpoint is not None
        self._forget_arrived(partitions)
        if self._checkpoint.open and self._checkpoint.fenced is None:
            try:
                self._checkpoint.abort()
            except (RetryableError, PermanentError) as exc:
                log.warning("abort after losing partitions failed", error=str(exc))
        for tp in partitions:
            self._close_store(tp.topic, tp.partition)
        log.warning("partitions lost", partitions=_names(partitions))
        self._report_partitions()

    def _forget_arrived(self, partitions: list[TopicPartition]) -> None:
        """Revoked before it was taken over: not taken over (no store was opened)."""
        if self._arrived:
            gone = {(tp.topic, tp.partition) for tp in partitions}
            self._arrived = [tp for tp in self._arrived if (tp.topic, tp.partition) not in gone]

    def _close_store(self, topic: str, partition: int) -> None:
        assert self._stores is not None
        if topic not in self.feeds:
            self._stores.close(topic, partition)
            if self._standbys is not None and self._running:  # another owner has it now
                self._standbys.follow(self._stores.changelogs[topic], partition)
        self.metrics.forget_partition(topic, partition)

    def _follow_everything(self, changelogs: Iterable[str]) -> None:
        """Follow every partition of ``changelogs`` (the assignment releases its own)."""
        assert self._consumer is not None and self._standbys is not None
        for changelog in changelogs:
            try:
                found = self._consumer.list_topics(changelog, timeout=_TIMEOUT).topics[changelog]
            except KafkaException as exc:
                raise translate_kafka_error(exc, f"reading the partitions of {changelog}") from exc
            for partition in found.partitions:
                self._standbys.follow(changelog, partition)

    def _report_partitions(self) -> None:
        assert self._stores is not None
        self.metrics.partitions(len(self._stores), self._stores.restoring)

    # ------------------------------------------------------------------ topics

    def _ensure_topics(self) -> tuple[dict[str, int], dict[str, str]]:
        """Create the topology's topics; return each aggregate's commands partition count
        and each changelog's topic id."""
        admin = KafkaAdmin(self.kafka)
        spec = self.topology.topics
        replication = spec.replication_factor or admin.default_replication()
        partitions = spec.partitions
        prefix = self.settings.topic_prefix
        topics = [TopicSpec(context_topics(self.context.name, prefix).dlq, partitions, replication)]
        # The aggregates the sagas read from and send to get their topics too (created only
        # when missing), so a feed never subscribes to a topic that does not exist yet.
        touched: dict[tuple[str, str], Aggregate[Any]] = {}
        for aggregate in self.aggregates:
            touched[(aggregate.context, aggregate.name)] = aggregate
        for saga in self.sagas:
            sources, targets = saga_routes(saga, self.context)
            for aggregate in (*sources.values(), *targets.values()):
                touched.setdefault((aggregate.context, aggregate.name), aggregate)
            names_of = saga_topics(saga.context, saga.name, prefix)
            topics.append(TopicSpec(names_of.inputs, partitions, replication))
            topics.append(TopicSpec.compacted(names_of.changelog, partitions, replication))
        for aggregate in touched.values():
            names = aggregate_topics(aggregate.context, aggregate.name, prefix)
            for name in (names.commands, names.events, names.state, names.results):
                topics.append(TopicSpec(name, partitions, replication))
            topics.append(TopicSpec.compacted(names.changelog, partitions, replication))
        admin.create_topics(topics)
        counts: dict[str, int] = {}
        changelogs = []
        for aggregate in self.aggregates:
            names = aggregate_topics(self.context.name, aggregate.name, prefix)
            commands = admin.describe(names.commands)
            changelog = admin.describe(names.changelog)
            if len(commands.partitions) != len(changelog.partitions):
                raise PermanentError(
                    f"{names.changelog} has {len(changelog.partitions)} partitions, "
                    f"{names.commands} {len(commands.partitions)}: they must match"
                )
            counts[aggregate.name] = len(commands.partitions)
            changelogs.append(names.changelog)
        for saga in self.sagas:
            names_of = saga_topics(saga.context, saga.name, prefix)
            inputs = admin.describe(names_of.inputs)
            changelog = admin.describe(names_of.changelog)
            if len(inputs.partitions) != len(changelog.partitions):
                raise PermanentError(
                    f"{names_of.changelog} has {len(changelog.partitions)} partitions, "
                    f"{names_of.inputs} {len(inputs.partitions)}: they must match"
                )
            changelogs.append(names_of.changelog)
        return counts, admin.topic_ids(changelogs)


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}/{tp.partition}" for tp in partitions]
