"""Sagas in a worker: the feeds that repartition their inputs, and the saga kind of processor.

A saga instance lives on one partition of ``{context}.{saga}.inputs``, keyed by its saga id,
and its state and timers in that partition's store (changelogged like aggregate state).

- :class:`SagaFeed` reads a source topic in the worker's group: an events topic (the events
  the sagas react to: decoded, ``correlate``d and forwarded keyed by the saga id) or a
  results topic (the results of the commands a saga sent, found by their ``saga`` header
  and forwarded keyed by their ``saga_id`` header). A forward is one record in the worker's
  transaction, with the source record's offset: each input reaches its saga once. Every
  input goes through the inputs topic, even when its key already is the saga id: Kafka's
  assignors give no worker two topics' partitions of one number together, so only one
  topic makes one partition the owner of an instance.
- :class:`SagaProcessor` reads the inputs topic. Per input, in the worker's transaction: the
  new state (or its deletion when the saga ends), the commands the saga sends, the timer
  changes and the input's offset. A command's id is
  :func:`~streamfold.domain.saga.saga_command_id` of the saga, the instance, the input and
  the command's position, so an input processed again after a crash sends the same ids,
  which the aggregates deduplicate. Each command carries ``correlation_id``,
  ``causation_id`` (the input), ``saga``, ``saga_id``, the input's ``tenant`` and
  ``traceparent``, ``principal`` ``saga:<context>.<saga>``, and ``issued_at`` the input's
  time (so its decide is as deterministic as the saga's).
- Timers are keys of the same store: the instance's entry names each timer's due time, and
  an index key ``\\x00t`` + due (ms, big-endian) + saga id + name orders them. The worker
  calls :meth:`SagaProcessor.fire_due` from its loop: each due timer is a synthetic input
  processed in the open transaction like an event (its index key deleted with it), so it
  fires once: an abort leaves it in place, a crash leaves it in the changelog, and a
  rebalance moves it with the partition. It never fires before its due time by the
  worker's wall clock; how late it fired is a metric.

A rejected or invalid command whose saga has no outcome handler for it is counted
(``saga_unhandled_outcomes_total``) and logged with the saga id. A handler that raises after
``handler_retries`` retries sends its input to the context's dead-letter topic
(``handler_error``); a timer whose handler keeps failing is dropped the same way.

The event feed starts where the worker's group has no offset with the earliest record: a
saga deployed with its aggregates sees every event; one added later sees the retained
history too.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgpack
from confluent_kafka import Message

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec, CodecError, RecordReader, RecordWriter
from streamfold.contracts.headers import DeadLetterReason, Headers
from streamfold.contracts.registry import RegistryUnavailableError
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command, Event
from streamfold.domain.naming import aggregate_topics, context_topics, saga_topics
from streamfold.domain.saga import (
    CommandOutcome,
    Decided,
    OutcomeKind,
    Saga,
    SagaInput,
    SagaMetadata,
    TimerFired,
    is_cancelled,
)
from streamfold.errors import ConfigurationError, PermanentError
from streamfold.observability.logging import get_logger
from streamfold.runtime.processor import Outbox, UnproducibleRecordError
from streamfold.state.rocksdb import PartitionStore
from streamfold.state.timers import due_timers, parse_timer_key, stage_timers, timer_key

__all__ = [
    "SagaEntry",
    "SagaFeed",
    "SagaMetrics",
    "SagaProcessor",
    "namespace_of",
    "parse_timer_key",
    "saga_routes",
    "timer_key",
]

log = get_logger(__name__)

_EVENT, _OUTCOME = "event", "outcome"


class SagaMetrics(Protocol):
    def saga_input(self, saga: str, outcome: str, commands: int = 0) -> None: ...

    def unhandled_outcome(self, saga: str, outcome: str, code: str) -> None: ...

    def timer_fired(self, saga: str, lateness_seconds: float) -> None: ...

    def dead_letter(self, aggregate: str, reason: str) -> None: ...


class CorruptSagaEntryError(PermanentError):
    """A store value that is not a saga entry."""


@dataclass(slots=True)
class SagaEntry:
    """One instance in the store: its state (Avro wire bytes), its timers (name -> due, ms
    since the epoch), and the tenant and correlation id of the input that started it.

    Encoding: msgpack of ``[state, {name: due}, tenant, correlation_id]``."""

    state: bytes | None = None
    timers: dict[str, int] = field(default_factory=dict)
    tenant: str | None = None
    correlation_id: str | None = None

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [self.state, self.timers, self.tenant, self.correlation_id], use_bin_type=True
        )
        return packed

    @classmethod
    def decode(cls, raw: bytes) -> SagaEntry:
        try:
            state, timers, tenant, correlation_id = msgpack.unpackb(raw, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptSagaEntryError(f"not a saga entry: {exc}") from exc
        if not (
            isinstance(state, bytes | None)
            and isinstance(timers, dict)
            and all(isinstance(k, str) and type(v) is int for k, v in timers.items())
            and isinstance(tenant, str | None)
            and isinstance(correlation_id, str | None)
        ):
            raise CorruptSagaEntryError("not a saga entry: a field has the wrong type")
        return cls(state, timers, tenant, correlation_id)


@dataclass(frozen=True, slots=True)
class _Target:
    topic: str
    aggregate: Aggregate[Any]
    writer: RecordWriter[Any]


def saga_routes(
    saga: Saga[Any], context: BoundedContext
) -> tuple[dict[type[Event], Aggregate[Any]], dict[type[Command], Aggregate[Any]]]:
    """The aggregate each event type of the saga comes from, and the aggregate each command
    type it sends goes to (in its own context or one of its ``sources``)."""
    contexts = [context, *saga.sources]
    sources: dict[type[Event], Aggregate[Any]] = {}
    for event in saga.events:
        owner = next((a for c in contexts for a in c.aggregates if event in a.events), None)
        if owner is None:
            raise ConfigurationError(f"{saga!r}: no aggregate of its contexts emits {event}")
        sources[event] = owner
    targets: dict[type[Command], Aggregate[Any]] = {}
    for command in saga.sends:
        owner = next((a for c in contexts for a in c.aggregates if command in a.commands), None)
        if owner is None:
            raise ConfigurationError(
                f"{saga!r}: no aggregate of its contexts handles {command.__name__}"
            )
        targets[command] = owner
    return sources, targets


def namespace_of(aggregate: Aggregate[Any], saga: Saga[Any], context: BoundedContext) -> str:
    for candidate in (context, *saga.sources):
        if candidate.name == aggregate.context:
            namespace: str = candidate.namespace
            return namespace
    raise ConfigurationError(f"no context {aggregate.context!r} known to {saga!r}")


class SagaFeed:
    """Forwards the inputs one source topic holds for sagas to their inputs topics."""

    def __init__(
        self,
        topic: str,
        codec: AvroCodec,
        *,
        dlq_topic: str,
        events: dict[Saga[Any], tuple[type[Event], ...]] | None = None,
        outcomes: Iterable[Saga[Any]] = (),
        namespace: str | None = None,
        topic_prefix: str = "",
        metrics: SagaMetrics,
    ) -> None:
        self.topic = topic
        self.name = f"feed {topic}"
        self.metrics = metrics
        #: Where an event that cannot be decoded or correlated goes (the worker's context's).
        self.dlq_topic = dlq_topic
        #: message type -> the sagas that react to it, with their inputs topic
        self._by_type: dict[str, list[tuple[Saga[Any], str]]] = {}
        for saga, types in (events or {}).items():
            inputs = saga_topics(saga.context, saga.name, topic_prefix).inputs
            for event in types:
                self._by_type.setdefault(event.__name__, []).append((saga, inputs))
        self._outcomes = {
            s.full_name: saga_topics(s.context, s.name, topic_prefix).inputs for s in outcomes
        }
        models = {e for types in (events or {}).values() for e in types}
        self._reader = codec.reader(*models, namespace=namespace) if models else None

    @property
    def input_topic(self) -> str:
        return self.topic

    def process(self, message: Message, outbox: Outbox) -> str:
        raw = message.headers() or []
        headers = h.header_list(raw)
        source = f"{message.topic()}/{message.partition()}/{message.offset()}"
        quarantined = outbox.quarantined(_input_id(headers))
        if quarantined is not None:  # its forward could not be produced last time
            error = UnproducibleRecordError(source, quarantined.reason, quarantined.error)
            _dead_letter(outbox, self.dlq_topic, message, quarantined.reason, error)
            return "dead_lettered"
        stamp = str(message.timestamp()[1]).encode()
        if self._outcomes:
            saga: str | None = None
            saga_id: bytes | None = None
            for name, value in headers:
                if name == h.SAGA:
                    saga = value.decode(errors="replace")
                elif name == h.SAGA_ID:
                    saga_id = value
            inputs = self._outcomes.get(saga) if saga is not None else None
            if inputs is None or saga_id is None:
                return "skipped"
            extra = [
                (h.SAGA_INPUT, _OUTCOME.encode()),
                (h.SAGA_SOURCE, source.encode()),
                (h.SAGA_TIME, stamp),
            ]
            outbox.send(inputs, saga_id, message.value(), [*headers, *extra])
            return "forwarded"
        message_type = next(
            (v.decode(errors="replace") for k, v in headers if k == h.MESSAGE_TYPE), None
        )
        routes = self._by_type.get(message_type) if message_type is not None else None
        if not routes:
            return "skipped"
        assert self._reader is not None
        payload = message.value()
        try:
            event = self._reader.decode(payload or b"")
            assert isinstance(event, Event)
            targets = [(route.correlate(event), inputs) for route, inputs in routes]
        except RegistryUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - a codec error or a user correlate
            reason = (
                DeadLetterReason.UNDECODABLE_PAYLOAD
                if isinstance(exc, CodecError)
                else DeadLetterReason.HANDLER_ERROR
            )
            _dead_letter(outbox, self.dlq_topic, message, reason, exc)
            self.metrics.dead_letter(routes[0][0].name, reason.value)
            return "dead_lettered"
        key = message.key() or b""
        extra = [
            (h.SAGA_INPUT, _EVENT.encode()),
            (h.SAGA_SOURCE, source.encode()),
            (h.SAGA_TIME, stamp),
            ("saga.aggregate_id", key),
        ]
        for instance, inputs in targets:
            outbox.send(inputs, instance.encode(), payload, [*headers, *extra])
        return "forwarded"


class SagaProcessor:
    """Runs one saga type over the partitions of its inputs topic."""

    def __init__(
        self,
        saga: Saga[Any],
        context: BoundedContext,
        codec: AvroCodec,
        *,
        topic_prefix: str = "",
        handler_retries: int,
        metrics: SagaMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.saga = saga
        self.name = saga.name
        self.topics = saga_topics(saga.context, saga.name, topic_prefix)
        self.dlq_topic = context_topics(saga.context, topic_prefix).dlq
        self.retries = handler_retries
        self.metrics = metrics
        self.clock = clock
        self._principal = f"saga:{saga.full_name}".encode()
        self._saga_header = saga.full_name.encode()
        sources, targets = saga_routes(saga, context)
        self._readers: dict[str, RecordReader] = {}
        by_topic: dict[str, tuple[str, list[type[Event]]]] = {}
        for event, aggregate in sources.items():
            topic = aggregate_topics(aggregate.context, aggregate.name, topic_prefix).events
            namespace = namespace_of(aggregate, saga, context)
            by_topic.setdefault(topic, (namespace, []))[1].append(event)
        for topic, (namespace, models) in by_topic.items():
            self._readers[topic] = codec.reader(*models, namespace=namespace)
        self._results = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
        self._targets: dict[type[Command], _Target] = {}
        for command, aggregate in targets.items():
            topic = aggregate_topics(aggregate.context, aggregate.name, topic_prefix).commands
            namespace = namespace_of(aggregate, saga, context)
            self._targets[command] = _Target(
                topic, aggregate, codec.writer(topic, command, namespace)
            )
        self._states = codec.reader(saga.state_type, namespace=context.namespace)
        self._state_writer = codec.writer(self.topics.changelog, saga.state_type, context.namespace)

    @property
    def input_topic(self) -> str:
        return self.topics.inputs

    @property
    def changelog_topic(self) -> str:
        return self.topics.changelog

    # ------------------------------------------------------------------ inputs

    def process(self, message: Message, store: PartitionStore, outbox: Outbox) -> str:
        raw = h.header_map(message.headers())
        here = f"{message.topic()}/{message.partition()}/{message.offset()}"
        source = raw.get(h.SAGA_SOURCE, here)
        key = message.key() or b""
        quarantined = outbox.quarantined(source)
        if quarantined is not None:
            error = UnproducibleRecordError(source, quarantined.reason, quarantined.error)
            return self._dead_letter(message, quarantined.reason, error, outbox)
        try:
            item = self._decode(message, raw, source)
        except RegistryUnavailableError:
            raise
        except CodecError as exc:
            return self._dead_letter(message, DeadLetterReason.UNDECODABLE_PAYLOAD, exc, outbox)
        if item is None:
            return "skipped"
        stamp = raw.get(h.SAGA_TIME, "")
        millis = int(stamp) if stamp.isdigit() else message.timestamp()[1]
        occurred = datetime.fromtimestamp(millis / 1000, UTC) if millis > 0 else _now()
        version = raw.get(h.AGGREGATE_VERSION)
        meta = SagaMetadata(
            saga_id=key.decode(errors="replace"),
            input_id=source,
            occurred_at=occurred,
            tenant=raw.get(h.TENANT) or None,
            principal=raw.get(h.PRINCIPAL),
            causation_id=raw.get(h.COMMAND_ID),
            correlation_id=raw.get(h.CORRELATION_ID) or raw.get(h.COMMAND_ID),
            aggregate_id=raw.get("saga.aggregate_id"),
            version=int(version) if version and version.isdigit() else None,
        )
        outcome = self._run(store, outbox, key, item, meta, raw.get(h.TRACEPARENT), message)
        return outcome

    def _decode(self, message: Message, raw: dict[str, str], source: str) -> SagaInput | None:
        value = message.value() or b""
        if raw.get(h.SAGA_INPUT) == _OUTCOME:
            _name, record = self._results.decode_dict(value)
            if record.get("duplicate"):
                return None  # the first result was delivered already
            return CommandOutcome(
                command_id=record["command_id"],
                command_type=record.get("command_type") or "",
                aggregate_id=record.get("aggregate_id"),
                outcome=OutcomeKind(record["outcome"]),
                code=record.get("code"),
                message=record.get("message"),
                version=record.get("version") or 0,
            )
        topic = source.rsplit("/", 2)[0]
        reader = self._readers.get(topic)
        if reader is None:
            return None
        event = reader.decode(value)
        assert isinstance(event, Event)
        return event

    def _run(
        self,
        store: PartitionStore,
        outbox: Outbox,
        key: bytes,
        item: SagaInput,
        meta: SagaMetadata,
        traceparent: str | None,
        message: Message | None,
    ) -> str:
        raw_entry = store.get(key)
        try:
            entry = SagaEntry.decode(raw_entry) if raw_entry is not None else None
            state = (
                self._states.decode_as(entry.state, self.saga.state_type)
                if entry is not None and entry.state is not None
                else None
            )
        except (CorruptSagaEntryError, CodecError) as exc:
            return self._fail(message, meta, DeadLetterReason.CORRUPT_STATE, exc, outbox, 1)
        attempts = 0
        while True:
            attempts += 1
            try:
                decided = self.saga.handle(state, item, meta)
                break
            except Exception as exc:  # noqa: BLE001 - user code may raise anything
                if attempts > self.retries:
                    return self._fail(
                        message, meta, DeadLetterReason.HANDLER_ERROR, exc, outbox, attempts
                    )
                log.warning("saga handler failed; retrying", saga_id=meta.saga_id, error=repr(exc))
        if decided is None:
            self._unhandled(item, meta)
            self.metrics.saga_input(self.name, "ignored")
            return "ignored"
        if entry is None:
            entry = SagaEntry(tenant=meta.tenant, correlation_id=meta.correlation_id)
        try:
            self._apply(store, outbox, key, entry, decided, meta, traceparent)
        except CodecError as exc:
            raise UnproducibleRecordError(
                meta.input_id, DeadLetterReason.UNENCODABLE, str(exc)
            ) from exc
        self.metrics.saga_input(self.name, "handled", len(decided.commands))
        return "handled"

    def _apply(
        self,
        store: PartitionStore,
        outbox: Outbox,
        key: bytes,
        entry: SagaEntry,
        decided: Decided[Any],
        meta: SagaMetadata,
        traceparent: str | None,
    ) -> None:
        base: Headers = [
            (h.CORRELATION_ID, (entry.correlation_id or meta.saga_id).encode()),
            (h.CAUSATION_ID, meta.input_id.encode()),
            (h.SAGA, self._saga_header),
            (h.SAGA_ID, key),
            (h.PRINCIPAL, self._principal),
            (h.ISSUED_AT, meta.occurred_at.isoformat().encode()),
        ]
        tenant = entry.tenant or meta.tenant
        if tenant:
            base.append((h.TENANT, tenant.encode()))
        if traceparent:
            base.append((h.TRACEPARENT, traceparent.encode()))
        for command_id, command in decided.commands:
            target = self._targets[type(command)]
            aggregate_id = target.aggregate.aggregate_id(command)
            outbox.send(
                target.topic,
                aggregate_id.encode(),
                target.writer.encode(command),
                [(h.COMMAND_ID, str(command_id).encode()), *base],
            )
        before = dict(entry.timers)
        for name, due in decided.timers.items():
            entry.timers.pop(name, None)
            if not is_cancelled(due):
                entry.timers[name] = int(due.timestamp() * 1000)
        if decided.ended:
            entry.timers.clear()
        stage_timers(store, key, before, entry.timers)
        if decided.ended:
            store.stage(key, None)
            return
        entry.state = self._state_writer.encode(decided.state)
        encoded = entry.encode()
        if len(encoded) + len(key) > outbox.max_record_bytes:
            raise UnproducibleRecordError(
                meta.input_id,
                DeadLetterReason.RECORD_TOO_LARGE,
                f"the state of saga {meta.saga_id!r} would be {len(encoded)} bytes",
            )
        store.stage(key, encoded)

    def _unhandled(self, item: SagaInput, meta: SagaMetadata) -> None:
        if isinstance(item, CommandOutcome) and not item.accepted:
            code = item.code or ""
            self.metrics.unhandled_outcome(self.name, item.outcome.value, code)
            log.warning(
                "a saga command failed and no handler took its outcome",
                saga=self.saga.full_name,
                saga_id=meta.saga_id,
                command_id=item.command_id,
                command_type=item.command_type,
                outcome=item.outcome.value,
                code=code,
                error=(item.message or "")[:500],
            )

    # ------------------------------------------------------------------ timers

    def due(self, store: PartitionStore, limit: int) -> list[bytes]:
        """The index keys of up to ``limit`` timers due now, earliest first."""
        return due_timers(store, int(self.clock() * 1000), limit)

    def fire(self, store: PartitionStore, outbox: Outbox, index_key: bytes) -> str:
        """Fire the timer of ``index_key`` (one of :meth:`due`) in the open transaction."""
        due_ms, saga_id, name = parse_timer_key(index_key)
        store.stage(index_key, None)
        raw_entry = store.get(saga_id)
        try:
            entry = SagaEntry.decode(raw_entry) if raw_entry is not None else None
        except CorruptSagaEntryError as exc:
            meta = SagaMetadata(saga_id.decode(errors="replace"), f"timer/{name}", _now())
            return self._fail(None, meta, DeadLetterReason.CORRUPT_STATE, exc, outbox, 1)
        if entry is None or entry.timers.get(name) != due_ms:
            return "stale"  # replaced or cancelled: its index key is gone now too
        input_id = f"timer/{name}/{due_ms}"
        due = datetime.fromtimestamp(due_ms / 1000, UTC)
        meta = SagaMetadata(
            saga_id=saga_id.decode(errors="replace"),
            input_id=input_id,
            occurred_at=due,
            tenant=entry.tenant,
            correlation_id=entry.correlation_id,
        )
        quarantined = outbox.quarantined(input_id)
        del entry.timers[name]
        store.stage(saga_id, entry.encode())
        if quarantined is not None:
            error = UnproducibleRecordError(input_id, quarantined.reason, quarantined.error)
            return self._fail(None, meta, quarantined.reason, error, outbox, 1)
        self.metrics.timer_fired(self.name, self.clock() - due_ms / 1000)
        return self._run(store, outbox, saga_id, TimerFired(name, due), meta, None, None)

    # ------------------------------------------------------------------ failures

    def _fail(
        self,
        message: Message | None,
        meta: SagaMetadata,
        reason: DeadLetterReason,
        error: BaseException,
        outbox: Outbox,
        attempts: int,
    ) -> str:
        if message is None:  # a timer: a record that names it
            named: Headers = [
                (h.SAGA, self._saga_header),
                (h.SAGA_ID, meta.saga_id.encode()),
                (h.SAGA_SOURCE, meta.input_id.encode()),
            ]
            headers = h.dead_letter_headers(
                named,
                reason,
                str(error),
                h.qualified_name(error),
                (self.topics.inputs, -1, -1),
                attempts,
            )
            outbox.send(self.dlq_topic, meta.saga_id.encode(), None, headers)
        else:
            _dead_letter(outbox, self.dlq_topic, message, reason, error, attempts)
        self.metrics.dead_letter(self.name, reason.value)
        self.metrics.saga_input(self.name, "dead_lettered")
        log.warning(
            "saga input dead-lettered",
            saga=self.saga.full_name,
            saga_id=meta.saga_id,
            input_id=meta.input_id,
            reason=reason.value,
            error=str(error)[:500],
            trace="".join(traceback.format_exception_only(error)).strip()[:500],
        )
        return "dead_lettered"

    def _dead_letter(
        self, message: Message, reason: DeadLetterReason, error: BaseException, outbox: Outbox
    ) -> str:
        key = (message.key() or b"").decode(errors="replace")
        meta = SagaMetadata(saga_id=key, input_id="", occurred_at=_now())
        return self._fail(message, meta, reason, error, outbox, 1)


def _dead_letter(
    outbox: Outbox,
    dlq: str,
    message: Message,
    reason: DeadLetterReason,
    error: BaseException,
    attempts: int = 1,
) -> None:
    source = (message.topic() or "", message.partition() or 0, message.offset() or 0)
    headers = h.dead_letter_headers(
        message.headers(), reason, str(error), h.qualified_name(error), source, attempts
    )
    outbox.send(dlq, message.key(), message.value(), headers)


def _input_id(headers: Headers) -> str:
    """The id the outbox names a forwarded record's input by (its command id header)."""
    return next((v.decode(errors="replace") for k, v in headers if k == h.COMMAND_ID), "")


def _now() -> datetime:
    return datetime.now(UTC)
