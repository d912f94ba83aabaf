"""The registry's store: an intent log in one single-partition, compacted Kafka topic.

:class:`KafkaIntentLog` owns a producer that appends intents and a reader thread that applies
the whole topic, in offset order, to a :class:`~streamfold.registry.state.RegistryState`.

Write path (:meth:`KafkaIntentLog.submit`):

1. give the intent a unique id (also its record key: compaction never merges two intents,
   so a replay sees every one of them);
2. append it (idempotent producer, ``acks=all``);
3. wait until the reader thread has applied it and return the outcome the state machine
   decided, which is the outcome every replica decides for that record.

Read barrier (:meth:`KafkaIntentLog.barrier`): read the partition's end offset and wait until
the state has applied everything before it, so a read that follows a write on another replica
sees it.

Start-up rebuilds the state from offset 0; the registry answers only once it has caught up
with the end offset it found when it started. Records that are not intents (not JSON, no
``op``) are skipped with a warning, identically on every replica.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamfold.errors import StreamfoldError
from streamfold.observability.logging import get_logger
from streamfold.registry.errors import RegistryApiError, RegistryStoreError
from streamfold.registry.state import RegistryState
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.reading import watermarks
from streamfold.transport.settings import KafkaSettings

__all__ = ["KafkaIntentLog"]

log = get_logger(__name__)

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[dict[str, Any]]"]


class KafkaIntentLog:
    """Append intents to the registry topic and apply the topic to ``state``."""

    def __init__(
        self,
        settings: KafkaSettings,
        state: RegistryState,
        topic: str = "_streamfold_schemas",
        replication_factor: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.state = state
        self.topic = topic
        self.replication_factor = replication_factor
        self.timeout_s = timeout_s
        self.lock = threading.Lock()  # guards ``state``; readers take it too
        self.position = 0  # next offset to apply
        self.ready = threading.Event()
        self._pending: dict[str, _Waiter] = {}
        self._barriers: list[tuple[int, Callable[[], object]]] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._probe: Consumer | None = None
        self._start_end = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the topic if missing, then rebuild the state from it; return when caught up."""
        admin = KafkaAdmin(self.settings)
        replication = self.replication_factor or admin.default_replication()
        admin.create_topics([TopicSpec.compacted(self.topic, 1, replication)])
        self._producer = Producer(
            self.settings.producer_config(**{"linger.ms": 1, "compression.type": "none"})
        )
        self._consumer = Consumer(
            self.settings.consumer_config(
                f"_streamfold_registry_{uuid.uuid4().hex}",
                **{"enable.partition.eof": False, "fetch.wait.max.ms": 10},
            )
        )
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        # A second, idle consumer answers end-offset queries: asking the reading one makes
        # the query wait behind its fetches (seconds under load).
        self._probe = Consumer(
            self.settings.consumer_config(f"_streamfold_registry_{uuid.uuid4().hex}")
        )
        self._start_end = self._end_offset()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="registry-log", daemon=True)
        self._thread.start()
        if not self.ready.wait(self.timeout_s * 4):
            raise RegistryStoreError(
                50002,
                f"could not read {self.topic} up to offset {self._start_end} in time "
                f"(at {self.position})",
            )
        log.info(
            "registry state rebuilt",
            topic=self.topic,
            records=self.position,
            schemas=len(self.state.schemas),
            subjects=len(self.state.subjects),
        )

    def stop(self) -> None:
        """Stop reading, flush the producer and close the clients."""
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._producer is not None:
            self._producer.flush(5)
        if self._consumer is not None:
            self._consumer.close()
        if self._probe is not None:
            self._probe.close()

    # ---------------------------------------------------------------- writes and barriers

    async def submit(self, intent: dict[str, Any]) -> Any:
        """Append ``intent``, wait until it is applied, and return its outcome (or raise it)."""
        if self._producer is None:
            raise RegistryStoreError(50001, "the registry log is not started")
        loop = asyncio.get_running_loop()
        intent_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[intent_id] = (loop, future)
        payload = json.dumps({**intent, "intent": intent_id}, separators=(",", ":"))
        try:
            self._producer.produce(
                self.topic,
                key=intent_id.encode(),
                value=payload.encode(),
                partition=0,
                on_delivery=lambda err, _msg: self._delivered(intent_id, err),
            )
        except (BufferError, KafkaException) as exc:
            self._pending.pop(intent_id, None)
            raise RegistryStoreError(50001, f"could not append to {self.topic}: {exc}") from exc
        try:
            outcome = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise RegistryStoreError(
                50002, f"the intent was not applied within {self.timeout_s}s"
            ) from None
        finally:
            self._pending.pop(intent_id, None)
        if "error" in outcome:
            error = dict(outcome["error"])
            if error.get("status") == 500:
                raise RegistryStoreError(int(error["error_code"]), str(error["message"]))
            raise RegistryApiError(
                int(error["status"]), int(error["error_code"]), str(error["message"])
            )
        return outcome["ok"]

    async def barrier(self) -> None:
        """Wait until every intent appended before this call is applied here."""
        loop = asyncio.get_running_loop()
        end = await loop.run_in_executor(None, self._end_offset)
        if self.position >= end:
            return
        done: asyncio.Future[None] = loop.create_future()

        def release() -> None:
            if not done.done():
                done.set_result(None)

        with self.lock:
            if self.position >= end:
                return
            self._barriers.append((end, partial(loop.call_soon_threadsafe, release)))
        try:
            await asyncio.wait_for(done, self.timeout_s)
        except TimeoutError:
            raise RegistryStoreError(
                50002, f"could not catch up with {self.topic} within {self.timeout_s}s"
            ) from None

    # ---------------------------------------------------------------- the reader thread

    def _run(self) -> None:
        assert self._consumer is not None and self._producer is not None
        if self.position >= self._start_end:
            self.ready.set()
        while self._running:
            self._producer.poll(0)
            try:
                # poll() returns as soon as one record arrives (consume() would wait out its
                # whole timeout for a full batch); then drain what is already fetched.
                first = self._consumer.poll(0.05)
                messages = [] if first is None else [first, *self._consumer.consume(499, 0)]
            except KafkaException as exc:
                log.warning("registry log read failed; retrying", error=str(exc))
                time.sleep(0.5)
                continue
            for message in messages:
                self._apply(message)
            if not messages:
                self._skip_gap()
            self._release_barriers()
            if not self.ready.is_set() and self.position >= self._start_end:
                self.ready.set()

    def _apply(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("registry log error", error=str(error))
            return
        offset = int(message.offset() or 0)
        intent = _decode(message.value())
        with self.lock:
            self.position = offset + 1
            if intent is None:
                log.warning("skipping a record that is not an intent", offset=offset)
                return
            outcome = self.state.apply(intent)
        waiter = self._pending.get(str(intent.get("intent")))
        if waiter is not None:
            _resolve(waiter, outcome)

    def _skip_gap(self) -> None:
        """Idle at the end: move past offsets that hold no record (markers, compacted gaps)."""
        assert self._consumer is not None
        (assigned,) = self._consumer.position([TopicPartition(self.topic, 0)])
        with self.lock:
            if assigned.offset > self.position:
                self.position = int(assigned.offset)

    def _release_barriers(self) -> None:
        with self.lock:
            ready = [release for end, release in self._barriers if self.position >= end]
            self._barriers = [(end, r) for end, r in self._barriers if self.position < end]
        for release in ready:
            release()

    def _delivered(self, intent_id: str, err: KafkaError | None) -> None:
        if err is None:
            return
        waiter = self._pending.get(intent_id)
        if waiter is not None:
            _resolve(
                waiter,
                {"error": {"status": 500, "error_code": 50001, "message": f"append failed: {err}"}},
            )

    def _end_offset(self) -> int:
        """The partition's end offset (retried while leadership settles)."""
        assert self._probe is not None
        try:
            return watermarks(self._probe, self.topic, 0, self.timeout_s)[1]
        except StreamfoldError as exc:
            raise RegistryStoreError(50001, f"cannot read the end of {self.topic}: {exc}") from exc


def _decode(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        intent = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return intent if isinstance(intent, dict) and "op" in intent else None


def _resolve(waiter: _Waiter, outcome: dict[str, Any]) -> None:
    loop, future = waiter

    def settle() -> None:
        if not future.done():
            future.set_result(outcome)

    loop.call_soon_threadsafe(settle)
