"""The checkpoint: a worker's open Kafka transaction, the unit of atomicity.

A transaction holds the outputs of many inputs, from any processor: the records they send,
the store writes they stage, the changelog records of those writes and the consumer offsets
past the inputs. The worker adds inputs (:meth:`Checkpoint.track`, :meth:`Checkpoint.done`)
and the processors write through the checkpoint as their :class:`~streamfold.runtime.
processor.Outbox`. Nothing here knows what a processor is.

A transaction begins no sooner than ``transaction_gap_ms`` after the previous one ended
(see :attr:`~streamfold.runtime.settings.WorkerSettings.transaction_gap_ms`): records sent
before then are held in memory, and the first record after the gap begins the transaction
and sends them. A held record leaves the list only once the producer has taken it.

:meth:`Checkpoint.commit`, step by step (the code mirrors them):

1. begin the transaction if it has not begun (the held records go out), send each touched
   store's staged entries to its changelog partition, and flush the producer: every record
   acknowledged, the changelog offsets known;
2. ``send_offsets_to_transaction`` with the consumer's group metadata (exactly-once v2);
3. ``commit_transaction``; a retriable failure (a timed-out commit) is asked again, up to
   the transaction's timeout;
4. only now write each touched store's staged entries with its last changelog offset in
   one RocksDB WriteBatch. A crash between 3 and 4 loses nothing: the store restores those
   entries from the changelog.

:meth:`Checkpoint.abort`: abort the transaction if it had begun, drop the staged entries
and the held records, and seek each partition of the batch back to its first offset, so the
batch is processed again (:attr:`Checkpoint.rewound` names those partitions).

Failures are classified once, here:

- fencing (a fatal producer error: another instance with this transactional id, or an
  epoch the broker bumped) raises :class:`FencedError`: the worker must not write again;
- a record the producer refuses (over ``message.max.bytes``, or one the broker rejects as
  too large) is its input's fault: the input is quarantined (:meth:`quarantine`) and the
  batch aborted, so the input is dead-lettered whole when it is read again. A refusal the
  broker reports only at commit names no record; the next batch (or any batch after a
  second failed commit in a row) then asks for a delivery report of every record until it
  commits, to find the input;
- any other Kafka error aborts and rewinds the batch, which is then processed again;
- a transactional call (sending offsets, committing, aborting) that has not returned
  ``hung_after_s`` after it was asked (its own timeout is 30 s) raises
  :class:`ProducerHungError`, a :class:`FencedError`: the producer is not used again, and
  the worker rejoins with a new one, whose ``init_transactions`` aborts the open
  transaction. librdkafka does not always keep those calls' timeouts: with the group
  coordinator's broker SIGKILLed, ``send_offsets_to_transaction`` was seen blocking for
  minutes, until the process was killed (confluentinc/librdkafka#5456 and #5511, open
  against librdkafka 2.16). So the calls run on a daemon thread of their own
  (:class:`_BoundedCalls`), and the one that hung stays blocked there.

At-least-once (``exactly_once`` off) has no transaction: records go out at once, and a
commit flushes them, then commits the offsets.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamfold.contracts import headers as h
from streamfold.contracts.headers import DeadLetterReason, Headers
from streamfold.errors import PermanentError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.runtime.processor import Quarantined, UnproducibleRecordError
from streamfold.state.rocksdb import PartitionStore
from streamfold.transport.admin import translate_kafka_error
from streamfold.transport.producing import produce

__all__ = [
    "BatchAbortedError",
    "Checkpoint",
    "CheckpointMetrics",
    "FencedError",
    "ProducerHungError",
]

log = get_logger(__name__)

_TIMEOUT = 30.0
#: librdkafka's own default ``message.max.bytes``.
DEFAULT_MAX_RECORD_BYTES = 1_000_000
_FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
#: Errors that are one record's fault, not the transaction's.
_RECORD_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
    }
)


class FencedError(PermanentError):
    """This worker's producer was fenced: another instance owns its work now."""


class ProducerHungError(FencedError):
    """A transactional call did not return in its bound: the producer is not used again."""


class _BoundedCalls:
    """Runs calls on a daemon thread and waits for each at most ``limit`` seconds.

    A call past its bound raises :class:`TimeoutError` here while its thread stays blocked
    in it (a daemon thread does not hold the process at exit); the next call gets a new
    thread. The call's own exception is raised as it is.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None

    def __call__(self, call: Callable[[], Any]) -> Any:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            thread = threading.Thread(
                target=_serve, args=(self._jobs,), name="transactional-calls", daemon=True
            )
            thread.start()
        future: Future[Any] = Future()
        self._jobs.put((call, future))
        try:
            return future.result(timeout=self.limit)
        except TimeoutError:
            if not future.done():
                self._jobs = None  # its thread is blocked: the next call gets a new one
            raise


def _serve(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
    while True:
        call, future = jobs.get()
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which raises it
            future.set_exception(exc)


class BatchAbortedError(RetryableError):
    """The open batch was aborted and rewound; its inputs will be read again."""


class CheckpointMetrics(Protocol):
    """What the checkpoint reports (implemented by streamfold.observability.metrics)."""

    def batch(self, size: int, commit_seconds: float) -> None: ...

    def aborted(self) -> None: ...


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
    #: Inputs whose records the broker refused, by input id (from delivery reports).
    refused: dict[str, Quarantined] = field(default_factory=dict)


class Checkpoint:
    """Owns the producer's transactions for one worker; the processors' outbox."""

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        changelogs: Mapping[str, str],
        metrics: CheckpointMetrics,
        *,
        exactly_once: bool = True,
        transaction_gap_ms: float = 3.0,
        transaction_timeout_ms: int = 30_000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        pause_file: Path | None = None,
        offset_metadata: str | None = None,
        hung_after_s: float = _TIMEOUT + 15.0,
    ) -> None:
        self.producer = producer
        self._bounded = _BoundedCalls(hung_after_s)
        self.consumer = consumer
        #: input topic -> the changelog of its stores
        self.changelogs = changelogs
        self.metrics = metrics
        self.exactly_once = exactly_once
        self.transaction_gap_s = transaction_gap_ms / 1000
        self.transaction_timeout_s = transaction_timeout_ms / 1000
        self._max_record_bytes = max_record_bytes
        self._pause_file = pause_file
        #: Written with every committed offset: who committed it (runtime/failover.py).
        self._offset_metadata = offset_metadata
        self._batch = _Batch()
        self._quiet_until = 0.0  # no transaction begins before (see transaction_gap_ms)
        self._quarantine: dict[str, Quarantined] = {}
        #: Ask for a delivery report of every record (to find a refused record's input).
        self._reporting = False
        self._failed_commits = 0  # in a row
        #: The partitions the last abort rewound (the worker resets it each turn).
        self.rewound: set[tuple[str, int]] | None = None
        self.fenced: BaseException | None = None

    # ------------------------------------------------------------------ the batch

    @property
    def open(self) -> bool:
        return self._batch.open

    @property
    def count(self) -> int:
        """Inputs done in the open batch."""
        return self._batch.count

    def age(self) -> float:
        """Seconds since the open batch began."""
        return time.monotonic() - self._batch.started if self._batch.open else 0.0

    def gap_left(self) -> float:
        """Seconds until a transaction may begin."""
        return self._quiet_until - time.monotonic()

    def track(self, topic: str, partition: int, offset: int, store: PartitionStore | None) -> None:
        """An input is about to be processed (the batch begins with the first); ``store`` is
        None for a processor without state."""
        batch = self._open_batch()
        key = (topic, partition)
        batch.first_offsets.setdefault(key, offset)
        if store is not None:
            batch.stores[key] = store

    def touch(self, topic: str, partition: int, store: PartitionStore | None) -> None:
        """A synthetic input (a timer, a retry) is processed in the batch: it has no
        offset, so an abort only drops its writes, and it is processed again later."""
        batch = self._open_batch()
        if store is not None:
            batch.stores[(topic, partition)] = store
        batch.count += 1

    def _open_batch(self) -> _Batch:
        batch = self._batch
        if not batch.open:
            batch = self._batch = _Batch(
                started=time.monotonic(), open=True, sending=not self.exactly_once
            )
        return batch

    def done(self, topic: str, partition: int, offset: int) -> None:
        """The input at ``offset`` is processed: its offset commits with the batch."""
        self._batch.next_offsets[(topic, partition)] = offset + 1
        self._batch.count += 1

    # ------------------------------------------------------------------ Outbox

    @property
    def max_record_bytes(self) -> int:
        return self._max_record_bytes

    def quarantined(self, input_id: str) -> Quarantined | None:
        """Why ``input_id`` must be dead-lettered now (asked once: the entry is used up)."""
        if not self._quarantine:
            return None
        return self._quarantine.pop(input_id, None)

    def quarantine(self, input_id: str, reason: DeadLetterReason, error: str) -> None:
        """Dead-letter ``input_id`` when it is read again (after :meth:`abort`)."""
        self._quarantine[input_id] = Quarantined(reason, error)
        log.warning("input quarantined", input_id=input_id, reason=reason.value, error=error)

    def reject(self, refused: UnproducibleRecordError) -> None:
        """None of an input's records may commit: abort the batch, and dead-letter the input
        when the rewound batch reaches it again."""
        self.quarantine(refused.input_id, refused.reason, refused.error)
        self.abort()

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Produce a record in the batch's transaction (murmur2 of the key unless
        ``partition``); held until the transaction may begin."""
        batch = self._batch
        where = -1 if partition is None else partition
        if batch.sending:
            try:
                self._emit(topic, key, value, headers, where)
            except KafkaException as exc:
                self._classify(exc, "producing")
                log.warning("producing failed; aborting and reprocessing", error=str(exc))
                self.abort()
                raise BatchAbortedError(f"producing to {topic}: {exc}") from exc
            return
        batch.held.append((topic, key, value, headers, where))
        if time.monotonic() >= self._quiet_until:
            try:
                self._begin_transaction(batch)
            except KafkaException as exc:
                self._classify(exc, "beginning a transaction")
                # Try again a little later (at the latest when the batch commits); every
                # record not yet taken by the producer is still held.
                self._quiet_until = time.monotonic() + 0.05
                log.warning("beginning a transaction failed; retrying", error=str(exc))

    def _begin_transaction(self, batch: _Batch) -> None:
        """Begin the batch's transaction (once the gap has passed) and send what was held."""
        if not batch.in_transaction:
            wait = self._quiet_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.producer.begin_transaction()
            batch.in_transaction = True
        held, sent = batch.held, 0
        try:
            for record in held:
                self._emit(*record)
                sent += 1
        finally:
            del held[:sent]  # what the producer took; the rest stays held
        batch.sending = True
        if sent:
            self._pause_if_asked()

    def _emit(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int
    ) -> None:
        """Produce one record of the batch: to ``partition``, or by its key when it is -1."""
        try:
            if self._reporting:  # a delivery report carries no headers: name the input now
                report = functools.partial(self._record_delivered, _input_id(headers))
                if partition < 0:
                    produce(self.producer, topic, value, key, headers=headers, on_delivery=report)
                else:
                    produce(
                        self.producer,
                        topic,
                        value,
                        key,
                        headers=headers,
                        partition=partition,
                        on_delivery=report,
                    )
            elif partition < 0:
                produce(self.producer, topic, value, key, headers=headers)
            else:
                produce(self.producer, topic, value, key, headers=headers, partition=partition)
        except KafkaException as exc:
            refused = _unproducible(exc, topic, key, value, headers)
            if refused is not None:
                raise refused from exc
            raise

    def _send_changelogs(self, batch: _Batch) -> None:
        """Send each touched store's staged entries to its changelog partition.

        One record per key (its latest entry); only each partition's last record asks
        for a delivery report, which gives the offset the store records at commit.
        """
        for (topic, partition), store in batch.stores.items():
            changelog = self.changelogs[topic]
            staged = store.staged_items()
            for key, value in staged[:-1]:
                produce(self.producer, changelog, value, key, partition=partition)
            if staged:
                key, value = staged[-1]
                produce(
                    self.producer,
                    changelog,
                    value,
                    key,
                    partition=partition,
                    on_delivery=self._changelog_delivered,
                )

    def _changelog_delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            return  # the transaction will fail to commit and abort
        key = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        if offset > self._batch.changelog_offsets.get(key, -1):
            self._batch.changelog_offsets[key] = offset

    def _record_delivered(
        self, input_id: str | None, err: KafkaError | None, message: Message
    ) -> None:
        """A record's delivery report, asked for while looking for a refused record."""
        if err is None or err.code() not in _RECORD_CODES:
            return
        if input_id is not None:
            detail = f"{message.topic()}: {err.str()} ({len(message) or 0} bytes)"
            self._batch.refused[input_id] = Quarantined(DeadLetterReason.RECORD_TOO_LARGE, detail)

    # ------------------------------------------------------------------ commit and abort

    def commit(self) -> bool:
        """The checkpoint (see the module docstring for its steps); False if it aborted.

        Raises :class:`FencedError` when the producer was fenced."""
        batch = self._batch
        if not batch.open:
            return True
        started = time.monotonic()
        try:
            # 1. the records, the staged entries to the changelogs; every record acknowledged
            if not batch.sending:
                self._begin_transaction(batch)
            self._send_changelogs(batch)
            remaining = self.producer.flush(_TIMEOUT)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out"))
            offsets = self._offsets(batch.next_offsets)
            if not self.exactly_once:
                # at-least-once: the records are acknowledged; now the offsets
                if offsets:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                # 2. offsets into the transaction
                if offsets:
                    self._retrying(
                        "sending offsets",
                        lambda: self.producer.send_offsets_to_transaction(
                            offsets, self.consumer.consumer_group_metadata(), _TIMEOUT
                        ),
                    )
                # 3. commit
                self._retrying("committing", lambda: self.producer.commit_transaction(_TIMEOUT))
        except UnproducibleRecordError as exc:  # a held record, refused as it was sent
            self.reject(exc)
            return False
        except (KafkaException, SystemError) as raised:
            failure = _kafka_exception(raised)
            self._classify(failure, "committing")
            self._refused(failure)
            log.warning("transaction failed; aborting and reprocessing", error=str(failure))
            self.abort()
            return False
        finally:
            self._quiet_until = time.monotonic() + self.transaction_gap_s
        # 4. the stores follow the committed transaction
        for (topic, partition), store in batch.stores.items():
            store.commit(batch.changelog_offsets.get((self.changelogs[topic], partition)))
        self._batch = _Batch()
        self._reporting = False
        self._failed_commits = 0
        self.metrics.batch(batch.count, time.monotonic() - started)
        return True

    def _offsets(self, next_offsets: Mapping[tuple[str, int], int]) -> list[TopicPartition]:
        """The offsets to commit, each naming this worker when it has a name to write."""
        meta = self._offset_metadata
        if meta is None:  # the client refuses a None metadata
            return [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        return [TopicPartition(t, p, o, metadata=meta) for (t, p), o in next_offsets.items()]

    def _retrying(self, doing: str, call: Any) -> None:
        """Call a transactional API again while it fails retriably (a timeout), up to the
        transaction's timeout; librdkafka lets a retriable commit be asked again."""
        deadline = time.monotonic() + self.transaction_timeout_s
        while True:
            try:
                self._bounded(call)
                return
            except TimeoutError:
                self.fenced = ProducerHungError(f"{doing}: no answer in {self._bounded.limit:g} s")
                self._batch = _Batch()
                raise self.fenced from None
            except KafkaException as exc:
                error = _kafka_error(exc)
                retriable = error is not None and error.retriable()
                if not retriable or time.monotonic() >= deadline:
                    raise
                log.warning("failed retriably; asking again", doing=doing, error=str(exc))

    def _refused(self, exc: KafkaException) -> None:
        """After a commit failed: quarantine the inputs whose records the broker refused, or
        ask for every delivery report next time if the refused record is not known (the
        error names a refused record, or the last commit failed too)."""
        batch = self._batch
        self._failed_commits += 1
        for input_id, why in batch.refused.items():
            self.quarantine(input_id, why.reason, why.error)
        error = _kafka_error(exc)
        refusal = error is not None and error.code() in _RECORD_CODES
        if not batch.refused and (refusal or self._failed_commits > 1):
            self._reporting = True

    def abort(self) -> None:
        """Abort the batch: no record of it is committed; its inputs will be read again."""
        batch = self._batch
        if not batch.open:
            return
        self._batch = _Batch()
        try:
            if not self.exactly_once:
                # Records already sent stay sent (at-least-once); reprocess from the start.
                self.producer.flush(_TIMEOUT)
            elif batch.in_transaction:
                self._retrying("aborting", lambda: self.producer.abort_transaction(_TIMEOUT))
        except KafkaException as exc:
            self._classify(exc, "aborting")
            raise translate_kafka_error(exc, "aborting a transaction") from exc
        finally:
            for store in batch.stores.values():
                store.discard()
            self._quiet_until = time.monotonic() + self.transaction_gap_s
        self.metrics.aborted()
        self.seek(batch.first_offsets)
        self.rewound = set(batch.first_offsets)

    def abort_on_failure(self, why: str) -> None:
        """Abort what is open because the worker ends on a failure; never commit it."""
        if not self._batch.open or self.fenced is not None:
            self._batch = _Batch()
            return
        log.warning("aborting the open transaction", why=why)
        try:
            self.abort()
        except (RetryableError, PermanentError) as exc:
            # The broker aborts it at transaction.timeout.ms in any case; the failure that
            # ends the worker is what its caller raises.
            log.warning("abort failed", error=str(exc))

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Seek each partition still assigned to its offset (revoked ones are skipped)."""
        if not offsets:
            return
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def _classify(self, exc: KafkaException, doing: str) -> None:
        """Stop for good on a fatal error (fencing); let the caller abort otherwise."""
        error = _kafka_error(exc)
        if error is not None and (error.fatal() or error.code() in _FENCED_CODES):
            self.fenced = exc
            self._batch = _Batch()
            raise FencedError(f"fenced while {doing}: {error}") from exc

    def flush_at_close(self) -> None:
        """Deliver what an at-least-once producer still holds (nothing is open then)."""
        if self.fenced is not None:
            return
        try:
            self.producer.flush(5)
        except KafkaException as exc:  # fatal now (e.g. fenced): nothing left to send
            log.warning("producer flush at close failed", error=str(exc))

    def _pause_if_asked(self) -> None:
        """A test hook: while ``pause_file`` exists, hold the open transaction here (once it
        has sent records: a batch of offsets alone is not held)."""
        if self._pause_file is None or not self._pause_file.exists():
            return
        marker = self._pause_file.with_name(self._pause_file.name + ".held")
        marker.write_text("a transaction is open\n", encoding="utf-8")
        log.warning("holding the open transaction (test hook)", file=str(self._pause_file))
        while self._pause_file.exists():
            time.sleep(0.05)


def _kafka_exception(raised: BaseException) -> KafkaException:
    """The Kafka error behind ``raised``.

    A fatal error that librdkafka reports while confluent-kafka runs a delivery callback
    (during ``flush``) surfaces as a ``SystemError`` whose context is the KafkaException.
    """
    if isinstance(raised, KafkaException):
        return raised
    inner = raised.__context__ or raised.__cause__
    if isinstance(inner, KafkaException):
        return inner
    raise raised


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else None


def _input_id(headers: Headers) -> str | None:
    for name, value in headers:
        if name == h.COMMAND_ID:
            return value.decode(errors="replace")
    return None


def _unproducible(
    exc: KafkaException, topic: str, key: bytes | None, value: bytes | None, headers: Headers
) -> UnproducibleRecordError | None:
    """The input's fault when the producer refused the record itself (too large)."""
    error = _kafka_error(exc)
    if error is None or error.code() not in _RECORD_CODES:
        return None
    return UnproducibleRecordError(
        _input_id(headers) or "",
        DeadLetterReason.RECORD_TOO_LARGE,
        f"{topic}: {error.str()} ({len(value or b'') + len(key or b'')} bytes)",
    )
