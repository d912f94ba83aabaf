"""An event handler's worker: its own consumer group, retries, parking, and exactly-once
emissions (see :mod:`streamfold.domain.handlers` for what a handler promises).

Topics of a handler ``h`` of context ``c`` (:func:`~streamfold.domain.naming.handler_topics`):

- ``c.h.dlq``: the events it gave up on (reason ``handler_error``, with the error and the
  attempts) and the events that waited behind them (``parked_behind``). All the records of
  one aggregate go to one partition, in order;
- ``c.h.parked``: compacted, one partition: per parked aggregate (key ``topic\\0id``), a JSON
  ``{"state": "parked", "pending": n, ...}`` (a tombstone releases it); and the requests of
  ``streamfold dlq retry``/``skip`` (key ``\\x01topic\\0id``, ``{"state": "retry"}`` or
  ``{"state": "skip"}``), answered with a tombstone.

Per batch of events, one transaction (the worker's :class:`~streamfold.runtime.checkpoint.
Checkpoint`) holds the events' offsets, what the handler emitted through its context on
its successful attempt, the dead letters and the parked records. So a parked aggregate
stays parked across crashes and rebalances, and an event is dead-lettered once.

Each loop turn, the worker reads the parked topic; an aggregate marked ``retry`` or
``skip`` whose events partition it owns is released: its pending dead letters are read
from the DLQ (the last ``pending`` records of its key), the first dropped on ``skip``, the
rest handled again in order, and the aggregate released in the same transaction. If one
fails again, the aggregate stays parked with what is left.

A newly assigned partition is processed only after the previous owner's transaction has
ended and the parked topic has been read to its end, so no event of a parked aggregate
overtakes it.

A fenced producer (the broker aborted a transaction this worker held open past its timeout,
while it was paused or cut off; or a transactional call hung) ends the open batch, which
the fence aborted: the handler closes its consumers and starts again in the same process
with a new producer, as the aggregate worker does, at most 5 times in 10 minutes
(:class:`~streamfold.transport.rejoins.Rejoins`); then it stops, and its process with it.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec, CodecError, RecordReader, RecordWriter
from streamfold.contracts.headers import DeadLetterReason, Headers
from streamfold.contracts.registry import RegistryUnavailableError
from streamfold.domain.context import BoundedContext
from streamfold.domain.handlers import EventHandler
from streamfold.domain.messages import Command, Event
from streamfold.domain.naming import aggregate_topics, handler_topics
from streamfold.errors import ConfigurationError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.runtime.checkpoint import BatchAbortedError, Checkpoint, FencedError
from streamfold.runtime.rebalance import CallbackGuard
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.supervisor import RejoiningLoop
from streamfold.runtime.topology import TopologySpec
from streamfold.transport.admin import KafkaAdmin, TopicSpec, translate_kafka_error
from streamfold.transport.partitioning import partition_for
from streamfold.transport.reading import reader, watermarks
from streamfold.transport.rejoins import Rejoins
from streamfold.transport.settings import KafkaSettings

__all__ = ["HandlerMetrics", "HandlerWorker", "ask", "parked_aggregates", "parked_key"]

log = get_logger(__name__)

_TIMEOUT = 30.0
_KEYS = uuid.UUID("9c2f1e4a-6b7d-4c3e-8a1f-0d5e6b7c8a90")
PARKED, RETRY, SKIP = "parked", "retry", "skip"
#: Prefix of a request's key on the parked topic (``streamfold dlq retry``/``skip``).
_ASK = b"\x01"


class HandlerMetrics(Protocol):
    def handler_event(self, handler: str, outcome: str) -> None: ...

    def parked(self, handler: str, aggregates: int) -> None: ...

    def batch(self, size: int, commit_seconds: float) -> None: ...

    def aborted(self) -> None: ...


def parked_key(topic: str, aggregate_id: bytes) -> bytes:
    """The parked topic's key of an aggregate: its events topic and its id."""
    return topic.encode() + b"\x00" + aggregate_id


@dataclass(slots=True)
class _Run:
    """The context of one event's handling (:class:`~streamfold.domain.handlers.
    HandlerContext`); what it emits is kept until the attempt has succeeded."""

    idempotency_key: str
    aggregate_id: str
    version: int | None
    worker: HandlerWorker
    records: list[tuple[str, bytes | None, bytes | None, Headers]] = field(default_factory=list)

    def send(self, command: Command) -> None:
        self.records.append(self.worker.command_record(command, self.idempotency_key))

    def produce(self, topic: str, key: str | bytes | None, value: str | bytes | None) -> None:
        if topic not in self.worker.handler.produces:
            raise ConfigurationError(
                f"handler {self.worker.handler.name!r} produced to {topic!r}, which is not in "
                f"its produces ({', '.join(self.worker.handler.produces) or 'none'})"
            )
        raw_key = key.encode() if isinstance(key, str) else key
        raw_value = value.encode() if isinstance(value, str) else value
        headers = [(h.CAUSATION_ID, self.idempotency_key.encode())]
        self.records.append((self.worker.prefix + topic, raw_key, raw_value, headers))


class HandlerWorker(RejoiningLoop):
    """Runs one event handler of a topology; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        topology: TopologySpec,
        context: BoundedContext,
        handler: EventHandler,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        codec: AvroCodec,
        metrics: HandlerMetrics,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.kafka = kafka
        self.metrics = metrics
        self.prefix = settings.topic_prefix
        self.group_id = f"{self.prefix}{topology.handler_group_id(handler)}"
        self.topics = handler_topics(context.name, handler.name, self.prefix)
        self.partitions = topology.topics.partitions
        self._replication = topology.topics.replication_factor
        sources: dict[str, list[type[Event]]] = {}
        for event in handler.events:
            owner = next((a for a in context.aggregates if event in a.events), None)
            if owner is None:
                raise ConfigurationError(f"handler {handler.name!r}: nothing emits {event}")
            topic = aggregate_topics(owner.context, owner.name, self.prefix).events
            sources.setdefault(topic, []).append(event)
        self.sources = list(sources)
        self._readers: dict[str, RecordReader] = {
            t: codec.reader(*events, namespace=context.namespace) for t, events in sources.items()
        }
        self._types = {t: {e.__name__ for e in events} for t, events in sources.items()}
        self._writers: dict[type[Command], tuple[str, RecordWriter[Any], Any]] = {}
        for command in handler.sends:
            aggregate = context.aggregate_for(command)
            topic = aggregate_topics(aggregate.context, aggregate.name, self.prefix).commands
            writer = codec.writer(topic, command, context.namespace)
            self._writers[command] = (topic, writer, aggregate)
        self._book: dict[bytes, dict[str, Any]] = {}  # the parked topic, as read
        self._staged: dict[bytes, dict[str, Any] | None] = {}  # this batch's parked writes
        self._source_partitions: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._parked_reader: Consumer | None = None
        self._checkpoint: Checkpoint | None = None
        self._running = False
        self._started = False
        self._joined = False
        self._callbacks = CallbackGuard()
        self.rejoins = Rejoins()  # after fences

    # ------------------------------------------------------------------ lifecycle

    def _recover_from(self, fence: FencedError) -> None:
        """After a fence (see the module docstring): make ready to start again, or raise."""
        over = self.rejoins.spend()
        if over is not None:
            raise FencedError(f"fenced {over}: {fence}") from fence
        log.warning(
            "the event handler was fenced; rejoining with a new producer",
            handler=self.handler.full_name,
            error=str(fence)[:300],
        )
        self._book.clear()
        self._staged.clear()
        self._joined = False
        self._callbacks = CallbackGuard()

    def start(self) -> None:
        admin = KafkaAdmin(self.kafka)
        replication = self._replication or admin.default_replication()
        admin.create_topics(
            [
                TopicSpec(self.topics.dlq, self.partitions, replication),
                TopicSpec.compacted(self.topics.parked, 1, replication),
                *(TopicSpec(t, self.partitions, replication) for t in self.sources),
                *(
                    TopicSpec(self.prefix + t, self.partitions, replication)
                    for t in self.handler.produces
                ),
            ]
        )
        self._source_partitions = {t: len(admin.describe(t).partitions) for t in self.sources}
        transactional_id = f"{self.group_id}.{self.settings.instance_id}"
        producer = Producer(
            self.kafka.transactional_producer_config(
                transactional_id, **{"transaction.timeout.ms": self.settings.transaction_timeout_ms}
            )
        )
        try:
            producer.init_transactions(_TIMEOUT)
        except KafkaException as exc:
            doing = f"initialising transactions ({transactional_id})"
            raise translate_kafka_error(exc, doing) from exc
        overrides: dict[str, Any] = {
            "session.timeout.ms": self.settings.session_timeout_ms,
            "max.poll.interval.ms": self.settings.max_poll_interval_ms,
        }
        if self.settings.static_membership:
            overrides["group.instance.id"] = f"{self.settings.instance_id}.{self.handler.name}"
        self._consumer = Consumer(self.kafka.consumer_config(self.group_id, **overrides))
        self._checkpoint = Checkpoint(
            producer,
            self._consumer,
            {},
            self.metrics,
            transaction_gap_ms=self.settings.transaction_gap_ms,
            transaction_timeout_ms=self.settings.transaction_timeout_ms,
            pause_file=self.settings.pause_in_transaction_file,
        )
        self._parked_reader = Consumer(
            self.kafka.consumer_config(
                f"{self.group_id}.parked-reader", **{"enable.partition.eof": True}
            )
        )
        self._parked_reader.assign([TopicPartition(self.topics.parked, 0, OFFSET_BEGINNING)])
        self._read_parked(to_end=True)
        self._consumer.subscribe(
            self.sources,
            on_assign=self._callbacks.guard(self._on_assign),
            on_revoke=self._callbacks.guard(self._on_revoke),
        )
        self._started = True
        log.info(
            "event handler started",
            handler=self.handler.full_name,
            group=self.group_id,
            sources=self.sources,
            parked=len(self._book),
        )

    @property
    def ready(self) -> bool:
        return self._started and self._joined

    def close(self, *, commit: bool = True) -> None:
        if not self._started:
            return
        self._started = False
        checkpoint, consumer = self._checkpoint, self._consumer
        assert checkpoint is not None and consumer is not None
        try:
            if checkpoint.open and checkpoint.fenced is None:
                if commit:
                    self._commit()
                else:
                    checkpoint.abort_on_failure("the handler stops on an error")
        finally:
            consumer.close()
            if self._parked_reader is not None:
                self._parked_reader.close()
            log.info("event handler stopped", handler=self.handler.full_name)

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        consumer, checkpoint = self._consumer, self._checkpoint
        assert consumer is not None and checkpoint is not None
        if checkpoint.fenced is not None:
            raise FencedError(f"the handler was fenced: {checkpoint.fenced}")
        self._read_parked()
        self._release_asked()
        try:
            messages = consumer.consume(self.settings.max_batch, 0.05)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "consuming events") from exc
        self._callbacks.raise_pending()
        for index, message in enumerate(messages):
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:  # type: ignore[union-attr]
                    log.warning("consumer error", error=str(message.error()))
                continue
            topic, partition, offset = message.topic() or "", message.partition(), message.offset()
            assert partition is not None and offset is not None
            checkpoint.rewound = None
            checkpoint.track(topic, partition, offset, None)
            try:
                self._handle(message)
            except (BatchAbortedError, RegistryUnavailableError) as exc:
                self._staged.clear()
                if isinstance(exc, RegistryUnavailableError):
                    checkpoint.abort()
                    time.sleep(1.0)
                self._rewind(messages[index + 1 :])
                return
            checkpoint.done(topic, partition, offset)
            if checkpoint.age() >= self.settings.commit_interval_ms / 1000:
                # Retries sleep: a batch of failing events must not outlast its transaction.
                self._commit()
        if checkpoint.open:
            self._commit()

    def _commit(self) -> None:
        assert self._checkpoint is not None
        if self._checkpoint.commit():
            for key, value in self._staged.items():
                self._apply_parked(key, value)
        self._staged.clear()

    def _rewind(self, rest: list[Message]) -> None:
        """After an abort: what followed in the batch is read again after it."""
        assert self._checkpoint is not None
        aborted = self._checkpoint.rewound or set()
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            key = (message.topic() or "", message.partition() or 0)
            if message.error() is None and key not in aborted:
                first.setdefault(key, message.offset() or 0)
        self._checkpoint.seek(first)

    # ------------------------------------------------------------------ one event

    def _handle(self, message: Message) -> None:
        assert self._checkpoint is not None
        topic = message.topic() or ""
        raw = h.header_map(message.headers())
        if raw.get(h.MESSAGE_TYPE) not in self._types[topic]:
            return
        aggregate = message.key() or b""
        key = parked_key(topic, aggregate)
        parked = self._parked_state(key)
        if parked is not None:
            self._dead_letter(message, DeadLetterReason.PARKED_BEHIND, None, 0)
            self._stage_parked(key, {**parked, "pending": parked.get("pending", 0) + 1})
            self.metrics.handler_event(self.handler.name, "parked_behind")
            return
        source = (topic, message.partition() or 0, message.offset() or 0)
        error, attempts = self._attempt(message, raw, source)
        if error is None:
            return
        self._dead_letter(message, DeadLetterReason.HANDLER_ERROR, error, attempts)
        aggregate_id = aggregate.decode(errors="replace")
        self._stage_parked(
            key,
            {
                "state": PARKED,
                "pending": 1,
                "aggregate_id": aggregate_id,
                "topic": topic,
                "error": str(error)[:500],
                "parked_at": datetime.now(UTC).isoformat(),
            },
        )
        log.warning(
            "event handler gave up; its aggregate is parked",
            handler=self.handler.full_name,
            aggregate_id=aggregate_id,
            source=f"{topic}/{source[1]}/{source[2]}",
            attempts=attempts,
            error=str(error)[:500],
        )

    def _attempt(
        self, message: Message, raw: dict[str, str], source: tuple[str, int, int]
    ) -> tuple[BaseException | None, int]:
        """Run the handler with retries; emit on success. (error or None, attempts)."""
        assert self._checkpoint is not None
        topic = source[0]
        try:
            event = self._readers[topic].decode(message.value() or b"")
        except CodecError as exc:
            return exc, 1
        key = str(uuid.uuid5(_KEYS, f"{self.handler.full_name}/{'/'.join(map(str, source))}"))
        version = raw.get(h.AGGREGATE_VERSION)
        backoff = self.handler.backoff.total_seconds()
        attempts = 0
        while True:
            attempts += 1
            run = _Run(
                key,
                (message.key() or b"").decode(errors="replace"),
                int(version) if version and version.isdigit() else None,
                self,
            )
            try:
                self.handler.fn(event, run)
            except Exception as exc:  # noqa: BLE001 - user code may raise anything
                self.metrics.handler_event(self.handler.name, "failed")
                if attempts > self.handler.retries:
                    return exc, attempts
                log.warning(
                    "event handler failed; retrying",
                    handler=self.handler.full_name,
                    attempt=attempts,
                    error=repr(exc)[:300],
                )
                time.sleep(backoff * 2 ** (attempts - 1))
                continue
            for record in run.records:
                self._checkpoint.send(*record)
            self.metrics.handler_event(self.handler.name, "handled")
            return None, attempts

    def command_record(
        self, command: Command, cause: str
    ) -> tuple[str, bytes | None, bytes | None, Headers]:
        entry = self._writers.get(type(command))
        if entry is None:
            raise ConfigurationError(
                f"handler {self.handler.name!r} sent {type(command).__name__}: not in its sends"
            )
        topic, writer, aggregate = entry
        command_id = uuid.uuid5(_KEYS, f"{cause}/{type(command).__name__}")
        headers = [
            (h.COMMAND_ID, str(command_id).encode()),
            (h.CAUSATION_ID, cause.encode()),
            (h.PRINCIPAL, f"handler:{self.handler.full_name}".encode()),
        ]
        return topic, aggregate.aggregate_id(command).encode(), writer.encode(command), headers

    def _dead_letter(
        self, message: Message, reason: DeadLetterReason, error: BaseException | None, attempts: int
    ) -> None:
        assert self._checkpoint is not None
        topic = message.topic() or ""
        what = "" if error is None else h.qualified_name(error)
        detail = str(error) if error is not None else "an earlier event of its aggregate failed"
        source = (topic, message.partition() or 0, message.offset() or 0)
        self._checkpoint.send(
            self.topics.dlq,
            message.key(),
            message.value(),
            h.dead_letter_headers(message.headers(), reason, detail, what, source, attempts),
            partition_for(parked_key(topic, message.key() or b""), self.partitions),
        )
        self.metrics.handler_event(self.handler.name, reason.value)

    # ------------------------------------------------------------------ parking

    def _parked_state(self, key: bytes) -> dict[str, Any] | None:
        if key in self._staged:
            return self._staged[key]
        return self._book.get(key)

    def _stage_parked(self, key: bytes, value: dict[str, Any] | None) -> None:
        assert self._checkpoint is not None
        self._staged[key] = value
        encoded = json.dumps(value, sort_keys=True).encode() if value is not None else None
        self._checkpoint.send(self.topics.parked, key, encoded, [], 0)

    def _apply_parked(self, key: bytes, value: dict[str, Any] | None) -> None:
        if value is None:
            self._book.pop(key, None)
        else:
            self._book[key] = value
        parked = sum(1 for k in self._book if not k.startswith(_ASK))
        self.metrics.parked(self.handler.name, parked)

    def _read_parked(self, *, to_end: bool = False) -> None:
        """Apply what the parked topic holds now (all of it up to its end, if ``to_end``)."""
        assert self._parked_reader is not None
        end = 0
        if to_end:
            with reader(self.kafka) as probe:
                end = watermarks(probe, self.topics.parked, 0)[1]
        deadline = time.monotonic() + _TIMEOUT
        while True:
            messages = self._parked_reader.consume(1000, 0.2 if end else 0)
            for message in messages:
                if message.error() is None:
                    value = message.value()
                    self._apply_parked(message.key() or b"", json.loads(value) if value else None)
            if len(messages) == 1000:
                continue
            if not end or self._reached(end):
                return
            if time.monotonic() > deadline:
                raise RetryableError(f"{self.topics.parked} could not be read to its end")

    def _reached(self, end: int) -> bool:
        assert self._parked_reader is not None
        (tp,) = self._parked_reader.position([TopicPartition(self.topics.parked, 0)])
        return tp.offset >= end

    def _release_asked(self) -> None:
        """Handle the retries and skips asked for aggregates this worker owns."""
        assert self._consumer is not None
        asked = [(k[1:], v) for k, v in self._book.items() if k.startswith(_ASK)]
        if not asked:
            return
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for key, value in asked:
            topic, _, aggregate = key.partition(b"\x00")
            name = topic.decode(errors="replace")
            partitions = self._source_partitions.get(name)
            if partitions is None or (name, partition_for(aggregate, partitions)) not in owned:
                continue
            self._release(key, str(value.get("state")))

    def _release(self, key: bytes, action: str) -> None:
        """Retry (or skip the first of) a parked aggregate's pending dead letters, in order."""
        assert self._checkpoint is not None
        parked = self._parked_state(key)
        pending = int(parked.get("pending", 0)) if parked is not None else 0
        letters = self._letters_of(key)[-pending:] if pending else []
        if action == SKIP and letters:
            letters = letters[1:]
            self.metrics.handler_event(self.handler.name, "skipped")
        self._checkpoint.touch(self.topics.parked, 0, None)
        self._stage_parked(_ASK + key, None)  # the request is answered
        left = len(letters)
        for letter in letters:
            raw = h.header_map(letter.headers())
            source = (
                raw.get(h.DLQ_SOURCE_TOPIC, ""),
                int(raw.get(h.DLQ_SOURCE_PARTITION, "0")),
                int(raw.get(h.DLQ_SOURCE_OFFSET, "0")),
            )
            error, _attempts = self._attempt(letter, raw, source)
            if error is not None:
                assert parked is not None
                again = {**parked, "pending": left, "error": str(error)[:500]}
                self._stage_parked(key, again)
                log.warning(
                    "a parked aggregate failed again; it stays parked",
                    handler=self.handler.full_name,
                    key=key.decode(errors="replace"),
                    error=_trace(error),
                )
                break
            left -= 1
        else:
            if parked is not None:
                self._stage_parked(key, None)
                self.metrics.handler_event(self.handler.name, "released")
            log.info(
                "parked aggregate released",
                handler=self.handler.full_name,
                key=key.decode(errors="replace"),
                action=action,
                handled=len(letters),
            )
        self._commit()

    def _letters_of(self, key: bytes) -> list[Message]:
        """The dead letters of ``key``'s aggregate, in order."""
        topic, _, aggregate = key.partition(b"\x00")
        partition = partition_for(key, self.partitions)
        found = []
        with reader(self.kafka) as consumer:
            _low, end = watermarks(consumer, self.topics.dlq, partition)
            consumer.assign([TopicPartition(self.topics.dlq, partition, OFFSET_BEGINNING)])
            while end > 0:
                message = consumer.poll(5.0)
                if message is None:
                    break
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:  # type: ignore[union-attr]
                        break
                    continue
                raw = h.header_map(message.headers())
                if message.key() == aggregate and raw.get(h.DLQ_SOURCE_TOPIC) == topic.decode():
                    found.append(message)
                if (message.offset() or 0) + 1 >= end:
                    break
        return found

    # ------------------------------------------------------------------ rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.committed(partitions, timeout=_TIMEOUT)  # the previous owner's txn ended
        self._read_parked(to_end=True)
        self._joined = True
        log.info(
            "handler partitions assigned",
            handler=self.handler.name,
            partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions],
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._checkpoint is not None
        if self._checkpoint.open and self._checkpoint.fenced is None:
            self._commit()


def parked_aggregates(kafka: KafkaSettings, topic: str) -> dict[bytes, dict[str, Any]]:
    """What a handler's parked topic holds now: parked aggregates and open requests (keys
    starting with ``\\x01``)."""
    from streamfold.transport.reading import read_to_end  # noqa: PLC0415

    found: dict[bytes, dict[str, Any]] = {}
    for message in read_to_end(kafka, topic):
        value = message.value()
        if value:
            found[message.key() or b""] = json.loads(value)
        else:
            found.pop(message.key() or b"", None)
    return found


def ask(kafka: KafkaSettings, topic: str, key: bytes, action: str) -> None:
    """Ask the handler to retry (or skip the first of) a parked aggregate's dead letters."""
    if action not in (RETRY, SKIP):
        raise ValueError(f"action must be {RETRY!r} or {SKIP!r}, not {action!r}")
    producer = Producer(kafka.producer_config())
    producer.produce(topic, json.dumps({"state": action}).encode(), _ASK + key, partition=0)
    if producer.flush(_TIMEOUT):
        raise RetryableError(f"the {action} request to {topic} was not acknowledged")


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(error)).strip()[:500]
