"""Dead letters: read them back from ``{context}.dlq`` and replay them to their source topic.

An aggregate worker dead-letters a record it cannot process inside its Kafka transaction: the
original key, value and headers, plus the ``dlq.*`` headers of :mod:`streamfold.contracts.headers`
(reason, error, exception class, source topic/partition/offset, failure time, attempts).
Readers here therefore use ``isolation.level=read_committed``, assign partitions by hand and
commit nothing, so inspecting a dead-letter topic never disturbs a consumer group.

:func:`replay` produces a dead letter back to its source topic with its key and original
headers (``dlq.*`` removed, ``dlq.replayed_from`` added) through the idempotent murmur2
producer, so the record lands on the partition of its aggregate. Kafka errors become
:class:`~streamfold.errors.RetryableError` or :class:`~streamfold.errors.PermanentError`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from streamfold.contracts.codec import HEADER_SIZE, MAGIC_BYTE
from streamfold.contracts.headers import (
    DLQ_ATTEMPTS,
    DLQ_ERROR,
    DLQ_EXCEPTION,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_REPLAYED_FROM,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    header_list,
    header_map,
)
from streamfold.errors import PermanentError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.transport.admin import translate_kafka_error
from streamfold.transport.reading import partitions_of, reader, scan, watermarks
from streamfold.transport.settings import KafkaSettings

__all__ = [
    "DLQ_REPLAYED_FROM",
    "UNKNOWN_REASON",
    "DeadLetter",
    "DeadLetterNotFoundError",
    "confluent_schema_id",
    "find_dead_letter",
    "read_dead_letters",
    "replay",
]

log = get_logger(__name__)

#: The reason of a record on a dead-letter topic that carries no ``dlq.reason`` header.
UNKNOWN_REASON = "unknown"

_DLQ_PREFIX = "dlq."  # every dead-letter header lives under it; replay strips them all


class DeadLetterNotFoundError(PermanentError):
    """No dead letter at that partition and offset."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic, with its ``dlq.*`` headers parsed.

    ``headers`` are the original record's, without ``dlq.*``; ``dlq_headers`` are the
    ``dlq.*`` ones as written. A header that is missing or malformed leaves its field at
    ``None`` (``reason`` at ``"unknown"``, ``error`` and ``exception`` empty) rather than
    failing, so any record on the topic can be inspected.
    """

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    dlq_headers: tuple[tuple[str, bytes], ...]
    reason: str
    error: str
    exception: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    failed_at: datetime | None
    attempts: int | None

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        """Parse a consumed record; ``msg`` must not be an error event."""
        original: list[tuple[str, bytes]] = []
        dlq: list[tuple[str, bytes]] = []
        for name, raw in header_list(msg.headers()):
            (dlq if name.startswith(_DLQ_PREFIX) else original).append((name, raw))
        fields = header_map(dlq)
        ts_type, ts_ms = msg.timestamp()
        timestamp = (
            None
            if ts_type == TIMESTAMP_NOT_AVAILABLE
            else datetime.fromtimestamp(ts_ms / 1000, UTC)
        )
        return cls(
            topic=str(msg.topic()),
            partition=int(msg.partition() or 0),
            offset=int(msg.offset() or 0),
            timestamp=timestamp,
            key=msg.key(),
            value=msg.value(),
            headers=tuple(original),
            dlq_headers=tuple(dlq),
            reason=fields.get(DLQ_REASON) or UNKNOWN_REASON,
            error=fields.get(DLQ_ERROR, ""),
            exception=fields.get(DLQ_EXCEPTION, ""),
            source_topic=fields.get(DLQ_SOURCE_TOPIC) or None,
            source_partition=_int(fields.get(DLQ_SOURCE_PARTITION)),
            source_offset=_int(fields.get(DLQ_SOURCE_OFFSET)),
            failed_at=_datetime(fields.get(DLQ_FAILED_AT)),
            attempts=_int(fields.get(DLQ_ATTEMPTS)),
        )

    @property
    def position(self) -> str:
        """Where the dead letter is: ``partition:offset``."""
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str | None:
        """Where the record failed: ``topic/partition/offset``, or None if not recorded."""
        if self.source_topic is None:
            return None
        partition = "?" if self.source_partition is None else self.source_partition
        offset = "?" if self.source_offset is None else self.source_offset
        return f"{self.source_topic}/{partition}/{offset}"


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def confluent_schema_id(value: bytes | None) -> int | None:
    """The schema id of a Confluent wire-format payload, or None if it is not one."""
    if value is None or len(value) < HEADER_SIZE or value[0] != MAGIC_BYTE:
        return None
    return int.from_bytes(value[1:HEADER_SIZE], "big")


# --- reading ----------------------------------------------------------------------------


def read_dead_letters(
    settings: KafkaSettings,
    topic: str,
    *,
    partitions: Collection[int] | None = None,
    since_offset: int | None = None,
    limit: int | None = None,
    reason: str | None = None,
    timeout: float = 30.0,
) -> list[DeadLetter]:
    """Read ``topic`` from the beginning to its current end, ordered by partition and offset.

    ``partitions`` restricts the partitions read; ``since_offset`` skips every offset below it
    in each partition; ``reason`` keeps the dead letters with that reason; ``limit`` keeps the
    first ``limit`` of what matches. An empty topic gives ``[]`` at once; a topic that does not
    exist is a :class:`PermanentError`; a scan that gets no record for ``timeout`` seconds
    before the end a :class:`RetryableError`. Reads committed records only and commits nothing.
    """
    if limit is not None and limit <= 0:
        return []
    with reader(settings) as consumer:
        existing = partitions_of(consumer, topic, timeout)
        chosen = existing if partitions is None else sorted(set(partitions))
        missing = sorted(set(chosen) - set(existing))
        if missing:
            raise PermanentError(
                f"topic {topic} has partitions 0..{len(existing) - 1}, not {missing[0]}"
            )
        ranges: dict[int, tuple[int, int]] = {}
        for partition in chosen:
            low, high = watermarks(consumer, topic, partition, timeout)
            ranges[partition] = (max(low, since_offset or 0), high)
        letters: list[DeadLetter] = []
        counts = dict.fromkeys(chosen, 0)
        full: set[int] = set()  # partitions that yielded ``limit`` letters: the rest are later
        for msg in scan(consumer, topic, ranges, timeout, full):
            letter = DeadLetter.from_message(msg)
            if reason is not None and letter.reason != reason:
                continue
            letters.append(letter)
            counts[letter.partition] += 1
            if limit is not None and counts[letter.partition] >= limit:
                full.add(letter.partition)
    letters.sort(key=lambda d: (d.partition, d.offset))
    return letters if limit is None else letters[:limit]


def find_dead_letter(
    settings: KafkaSettings, topic: str, partition: int, offset: int, *, timeout: float = 30.0
) -> DeadLetter:
    """Read the dead letter at ``partition:offset`` of ``topic``.

    Raises :class:`DeadLetterNotFoundError` if the partition does not exist or the offset
    holds no committed record (outside the log, a transaction marker, an aborted record).
    """
    with reader(settings) as consumer:
        existing = partitions_of(consumer, topic, timeout)
        if partition not in existing:
            raise DeadLetterNotFoundError(
                f"no dead letter at {topic} {partition}:{offset}: "
                f"the topic has partitions 0..{len(existing) - 1}"
            )
        low, high = watermarks(consumer, topic, partition, timeout)
        if not low <= offset < high:
            held = f"offsets {low}..{high - 1}" if high > low else "no records"
            raise DeadLetterNotFoundError(
                f"no dead letter at {topic} {partition}:{offset}: "
                f"partition {partition} holds {held}"
            )
        for msg in scan(consumer, topic, {partition: (offset, high)}, timeout):
            if msg.offset() == offset:
                return DeadLetter.from_message(msg)
            break
    raise DeadLetterNotFoundError(
        f"no dead letter at {topic} {partition}:{offset}: "
        "the offset holds a transaction marker or an aborted record"
    )


# --- replaying --------------------------------------------------------------------------


def replay(
    settings: KafkaSettings,
    letter: DeadLetter,
    *,
    value: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[str, int, int]:
    """Produce ``letter`` back to its source topic; return the new ``(topic, partition, offset)``.

    The record keeps its key and original headers (``dlq.*`` removed, ``dlq.replayed_from``
    added); ``value`` replaces its value when given. The murmur2 partitioner puts it on its
    aggregate's partition. Waits for the broker's acknowledgement: a failure is a
    :class:`RetryableError` or :class:`PermanentError`, as is a source topic that is not
    recorded or does not exist (replay never creates a topic).
    """
    target = letter.source_topic
    if target is None:
        raise PermanentError(
            f"dead letter {letter.topic} {letter.position} has no {DLQ_SOURCE_TOPIC} header: "
            "there is no source topic to replay it to"
        )
    origin = f"{letter.topic}/{letter.partition}/{letter.offset}"
    headers: list[tuple[str, str | bytes | None]] = [
        *letter.headers,
        (DLQ_REPLAYED_FROM, origin.encode()),
    ]
    producer = Producer(
        settings.producer_config(
            **{
                "allow.auto.create.topics": False,
                "message.timeout.ms": int(timeout * 1000),
            }
        )
    )
    doing = f"replaying {letter.topic} {letter.position} to {target}"
    try:
        metadata = producer.list_topics(target, timeout=timeout)
    except KafkaException as exc:
        raise translate_kafka_error(exc, doing) from exc
    found = metadata.topics.get(target)
    if found is None or found.error is not None:
        raise PermanentError(f"{doing}: topic {target} does not exist")

    outcome: dict[str, Any] = {}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        outcome["error"] = err
        outcome["at"] = (msg.topic(), msg.partition(), msg.offset())

    try:
        producer.produce(
            target,
            key=letter.key,
            value=letter.value if value is None else value,
            headers=headers,
            on_delivery=delivered,
        )
    except (KafkaException, BufferError) as exc:
        error = exc if isinstance(exc, KafkaException) else KafkaException(str(exc))
        raise translate_kafka_error(error, doing) from exc
    if producer.flush(timeout) > 0 or "at" not in outcome:
        raise RetryableError(f"{doing}: no acknowledgement within {timeout:g} s")
    if outcome["error"] is not None:
        raise translate_kafka_error(KafkaException(outcome["error"]), doing)
    topic, partition, offset = outcome["at"]
    log.info("dead letter replayed", dead_letter=origin, topic=topic, partition=partition)
    return str(topic), int(partition), int(offset)
