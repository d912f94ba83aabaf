"""What the gateway knows of commands' outcomes, and the waits for them.

Outcomes are durable records in Kafka, not signals between processes: a worker writes one
result per command (``<ctx>.<aggregate>.results``, keyed by command id) and the sink one
PROJECTED ack once the command's rows are in ClickHouse (``<ctx>.projected``). So every
gateway replica reads them all, and any replica can answer a wait or a lookup of a command
another replica sent.

:class:`OutcomeBook` runs one consumer on a thread of its own, assigned by hand to every
partition of those topics (``read_committed``, no group, no commit):

1. at start each partition is read from ``lookback_s`` back (by timestamp), so a lookup of a
   command sent shortly before this replica started still finds it; the book is *ready* once
   it has read up to the ends the partitions had at start;
2. new topics and partitions (a sink started later, a topic grown) are picked up every
   few seconds, from their beginning or from the lookback, whichever is later;
3. every outcome read is kept (the last ``recent`` command ids) and handed to the event
   loop, which wakes the waits for that command.

A wait is registered before its command is produced, and registering and the book's updates
both run on the event loop, so no outcome can slip between "not known yet" and "waiting".
Waits are always released, since the ``with`` block of :meth:`register` closes them: on the
outcome, on timeout, on a client that goes away (its task is cancelled) and on shutdown
(:meth:`release` wakes them all).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamfold.contracts.codec import AvroCodec, CodecError
from streamfold.contracts.headers import TENANT, header_map
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult, Outcome
from streamfold.observability.logging import get_logger
from streamfold.transport.settings import KafkaSettings

__all__ = ["Answer", "Known", "OutcomeBook", "Registration", "Stage"]

log = get_logger(__name__)

_REFRESH_S = 3.0
#: One outcome read: command id, its result (None: a PROJECTED ack), its tenant header.
_Read = tuple[str, "Answer | None", str | None]
_POLL_S = 0.05


class Stage(IntEnum):
    """How far a command has come; a wait asks for one of them."""

    SENT = 1  # the broker acknowledged the command record
    PROCESSED = 2  # its aggregate answered: the result record
    #: The sink's ack: its state row (accepted) or its result row (rejected, invalid) is
    #: durable in ClickHouse, so ``GET .../state`` shows it. The append-only tables (events,
    #: the command log) follow within the sink's ``log_interval_ms``.
    PROJECTED = 3

    @classmethod
    def parse(cls, text: str) -> Stage:
        return cls[text.strip().upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Answer:
    """A command's result as the book keeps it: what an answer needs, its names interned
    (a :class:`CommandResult` model took 1.6 kB a command; the book keeps 100,000s)."""

    outcome: Outcome
    version: int
    event_types: tuple[str, ...]
    code: str | None
    message: str | None
    duplicate: bool
    aggregate_type: str
    aggregate_id: str | None
    command_type: str | None

    @classmethod
    def of(cls, record: dict[str, Any]) -> Answer:
        """From a decoded result record (``CommandResult``'s fields)."""
        command_type = record.get("command_type")
        code = record.get("code")
        return cls(
            Outcome(record["outcome"]),
            int(record.get("version") or 0),
            tuple(sys.intern(t) for t in record.get("event_types") or ()),
            sys.intern(code) if code else None,
            record.get("message"),
            bool(record.get("duplicate")),
            sys.intern(record["aggregate_type"]),
            record.get("aggregate_id"),
            sys.intern(command_type) if command_type else None,
        )


@dataclass(slots=True)
class Known:
    """What the book knows of one command."""

    result: Answer | None = None
    projected: bool = False
    #: The command's ``tenant`` header, as its result carries it on.
    tenant: str | None = None

    @property
    def stage(self) -> Stage:
        if self.projected:
            return Stage.PROJECTED
        return Stage.PROCESSED if self.result is not None else Stage.SENT


@dataclass(slots=True, eq=False)
class _Wait:
    command_id: str
    stage: Stage
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class OutcomeBook:
    """Read every outcome topic; keep recent outcomes; wake the waits (module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        codec: AvroCodec,
        result_topics: Iterable[str],
        projected_topic: str,
        *,
        recent: int = 200_000,
        lookback_s: float = 300.0,
    ) -> None:
        self._settings = settings
        self._results = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
        self._result_topics = tuple(result_topics)
        # A PROJECTED ack is read by its key (the command id) alone: its value is the sink's.
        self._projected_topic = projected_topic
        self._recent = recent
        self._lookback_s = lookback_s
        self._known: OrderedDict[str, Known] = OrderedDict()
        self._waits: dict[str, set[_Wait]] = {}
        self._open_waits = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        #: (start, end at assignment) of each assigned partition: what "ready" must read.
        self._bounds: dict[tuple[str, int], tuple[int, int]] = {}
        self.decode_failures = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading on a thread; outcomes are applied on ``loop``."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="gateway-outcomes", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Release every wait now (their requests answer 202) and refuse new ones; the
        event loop's side of a shutdown, which must not block."""
        self._stopping.set()
        for waits in list(self._waits.values()):
            for wait in waits:
                wait.done.set()

    def stop(self) -> None:
        """Release every wait and stop reading (joins the reading thread)."""
        self.release()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def ready(self) -> bool:
        """Whether the book has read what the partitions held at start (and still reads)."""
        return self._ready.is_set() and self._failure is None and not self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def failure(self) -> BaseException | None:
        """What stopped the reading thread, if it failed."""
        return self._failure

    @property
    def open_waits(self) -> int:
        """Waits open now (counted as they open and close: every send asks)."""
        return self._open_waits

    @property
    def known_count(self) -> int:
        return len(self._known)

    # ------------------------------------------------------------------ the loop's side

    def known(self, command_id: str) -> Known | None:
        """What is known of ``command_id`` (event loop only)."""
        return self._known.get(command_id)

    def register(self, command_id: str, stage: Stage) -> Registration:
        """A wait for ``command_id``, open until the ``with`` block ends."""
        return Registration(self, _Wait(command_id, stage))

    def _open(self, wait: _Wait) -> None:
        self._waits.setdefault(wait.command_id, set()).add(wait)
        self._open_waits += 1

    def _close(self, wait: _Wait) -> None:
        waits = self._waits[wait.command_id]
        waits.remove(wait)
        self._open_waits -= 1
        if not waits:
            del self._waits[wait.command_id]

    def _apply(self, batch: list[_Read]) -> None:
        """Record a batch of outcomes and wake their waits (runs on the event loop)."""
        for command_id, result, tenant in batch:
            known = self._known.get(command_id)
            if known is None:
                known = self._known[command_id] = Known(tenant=tenant)
                if len(self._known) > self._recent:
                    self._known.popitem(last=False)
            if result is None:
                known.projected = True
            elif known.result is None or (known.result.duplicate and not result.duplicate):
                known.result = result  # the first answer; a repeat's "duplicate" only if alone
                known.tenant = tenant
            for wait in self._waits.get(command_id, ()):
                wait.changed.set()
                if known.stage >= wait.stage:
                    wait.done.set()

    # ------------------------------------------------------------------ the reading thread

    def _run(self) -> None:
        config = self._settings.consumer_config(
            f"streamfold-gateway-{uuid.uuid4().hex[:12]}",
            **{"enable.partition.eof": False, "fetch.wait.max.ms": 20},
        )
        consumer = Consumer(config)
        try:
            next_refresh = 0.0
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    self._refresh(consumer)
                    next_refresh = now + _REFRESH_S
                # consume() waits its whole timeout unless the batch fills: wait for the
                # first record only, then take what else is there without waiting.
                first = consumer.poll(_POLL_S)
                messages = [first, *consumer.consume(2000, 0)] if first is not None else []
                batch = self._decode(messages)
                if batch and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._apply, batch)
                if not self._ready.is_set() and self._caught_up(consumer):
                    self._ready.set()
                    log.info("outcomes read up to the start", partitions=len(self._bounds))
        except Exception as exc:
            self._failure = exc
            log.exception("the outcome reader failed")
            raise
        finally:
            consumer.close()

    def _decode(self, messages: list[Message]) -> list[_Read]:
        batch: list[_Read] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("outcome topic error", error=str(error))
                continue
            key = message.key()
            if message.topic() == self._projected_topic:
                if key:
                    batch.append((key.decode("utf-8", "replace"), None, None))
                continue
            try:
                _, record = self._results.decode_dict(message.value() or b"")
                command_id, result = record["command_id"], Answer.of(record)
            except (CodecError, ValueError, KeyError) as exc:
                self.decode_failures += 1
                log.warning("undecodable result", error=str(exc), topic=message.topic())
                continue
            tenant = header_map(message.headers()).get(TENANT)
            batch.append((command_id, result, tenant))
        return batch

    def _refresh(self, consumer: Consumer) -> None:
        """Assign partitions not yet assigned: from the lookback, or their beginning."""
        topics = [*self._result_topics, self._projected_topic]
        try:
            metadata = consumer.list_topics(timeout=10)
        except KafkaException as exc:
            log.warning("cannot read outcome topics' metadata", error=str(exc))
            return
        new = [
            (topic, partition)
            for topic in topics
            if topic in metadata.topics and metadata.topics[topic].error is None
            for partition in metadata.topics[topic].partitions
            if (topic, partition) not in self._bounds
        ]
        if not new:
            return
        since_ms = int((time.time() - self._lookback_s) * 1000)
        try:
            ends = {tp: consumer.get_watermark_offsets(TopicPartition(*tp), 10)[1] for tp in new}
            found = consumer.offsets_for_times(
                [TopicPartition(topic, partition, since_ms) for topic, partition in new], 10
            )
        except KafkaException as exc:
            # A topic just created may have no leader yet: try again at the next refresh.
            log.warning("cannot read outcome offsets yet", error=str(exc))
            return
        starts = []
        for tp in found:
            key = (tp.topic, tp.partition)
            # No record since the lookback: start at the end read before the lookup, so a
            # record written in between is still read.
            offset = tp.offset if tp.offset >= 0 else ends[key]
            starts.append(TopicPartition(tp.topic, tp.partition, offset))
            self._bounds[key] = (offset, ends[key])
        consumer.incremental_assign(starts)
        log.info("reading outcomes", partitions=[f"{t}/{p}" for t, p in new])

    def _caught_up(self, consumer: Consumer) -> bool:
        """Whether every partition assigned so far was read up to its end at assignment."""
        if not self._bounds:
            return False
        behind = [tp for tp, (start, end) in self._bounds.items() if start < end]
        for tp in consumer.position([TopicPartition(*tp) for tp in behind]):
            # The last offset is often a transaction marker, which is never delivered.
            if tp.offset < self._bounds[(tp.topic, tp.partition)][1] - 1:
                return False
        return True


class Registration:
    """``with book.register(id, stage) as wait``: the wait is open inside the block."""

    def __init__(self, book: OutcomeBook, wait: _Wait) -> None:
        self._book = book
        self.wait = wait

    def __enter__(self) -> Registration:
        self._book._open(self.wait)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._book._close(self.wait)

    async def changed(self, timeout_s: float) -> Known | None:
        """Wait for any news of the command (or the time, or shutdown); what is known then."""
        self.wait.changed.clear()
        known = self._book.known(self.wait.command_id)
        if known is None or known.stage < self.wait.stage:
            waiter = asyncio.ensure_future(self.wait.changed.wait())
            done = asyncio.ensure_future(self.wait.done.wait())
            try:
                await asyncio.wait(
                    {waiter, done}, timeout=max(0.0, timeout_s), return_when="FIRST_COMPLETED"
                )
            finally:
                waiter.cancel()
                done.cancel()
        return self._book.known(self.wait.command_id)
