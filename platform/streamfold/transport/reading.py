"""Read a topic from a start to its current end, outside any consumer group.

Tools and tests read topics whole (dead letters, results, events, changelogs) without
joining a group or committing anything: :func:`read_to_end` assigns partitions by hand, reads
with ``read_committed`` (what a transactional writer committed) and stops at the end each
partition had when the read began. A partition also ends at its end-of-partition event,
because transaction markers occupy the last offsets without ever being delivered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamfold.errors import PermanentError, RetryableError
from streamfold.transport.admin import translate_kafka_error
from streamfold.transport.settings import KafkaSettings

__all__ = ["partitions_of", "read_to_end", "reader", "scan", "watermarks"]

_POLL_S = 0.5


@contextmanager
def reader(settings: KafkaSettings) -> Iterator[Consumer]:
    """A consumer for hand-assigned reads: read_committed, partition EOF events, no commits."""
    # The client requires a group id, but nothing subscribes or commits under it.
    config = settings.consumer_config(
        f"streamfold-reader-{uuid.uuid4().hex[:12]}",
        **{"enable.partition.eof": True, "enable.auto.offset.store": False},
    )
    consumer = Consumer(config)
    try:
        yield consumer
    finally:
        consumer.close()


def partitions_of(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[int]:
    """The partition numbers of ``topic``; a permanent error if it does not exist."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise translate_kafka_error(exc, f"reading metadata of {topic}") from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        if found is not None and found.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise translate_kafka_error(KafkaException(found.error), f"topic {topic}")
        raise PermanentError(f"topic {topic} does not exist")
    return sorted(found.partitions)


def watermarks(
    consumer: Consumer, topic: str, partition: int, timeout: float = 60.0
) -> tuple[int, int]:
    """The first offset and the end offset of one partition, asked of the leader.

    Retries while leadership settles (a topic just created, a leader moving, a broker lost
    or restarting) until ``timeout``, asking at most 5 s at a time: a broker that died
    mid-request must not use up the whole budget in one try. Each retry first asks for the
    topic's metadata: librdkafka refreshes its cache only every 5 minutes unless asked, and
    with a broker SIGKILLed and back a partition stayed "unknown" to it for over 60 s.
    """
    deadline = time.monotonic() + timeout
    first = True
    while True:
        remaining = deadline - time.monotonic()
        try:
            if not first:
                consumer.list_topics(topic, timeout=max(0.5, min(5.0, remaining)))
            first = False
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition),
                timeout=max(0.5, min(5.0, remaining)),
                cached=False,
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            settling = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _SETTLING
            )
            if not settling or time.monotonic() > deadline:
                raise translate_kafka_error(
                    exc, f"reading offsets of {topic} [{partition}]"
                ) from exc
            time.sleep(0.1)


_SETTLING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    # A broker lost or restarting: librdkafka's local view of it, until the leader moves.
    KafkaError._TIMED_OUT,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._TRANSPORT,
    KafkaError._DESTROY_BROKER,
    KafkaError._ALL_BROKERS_DOWN,
}


def scan(
    consumer: Consumer,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    timeout: float,
    enough: Collection[int] = (),
) -> Iterator[Message]:
    """Yield the records of each partition in ``[start, end)``; stop at the end of each.

    The end is read before the scan, so records written meanwhile are not waited for. A
    partition also ends at its end-of-partition event, since transaction markers occupy the
    last offsets without being delivered. A partition whose number the caller adds to
    ``enough`` while iterating is paused and ends too. ``timeout`` bounds the wait for the
    next record or end, not the whole scan.
    """
    pending = {p: r for p, r in ranges.items() if r[0] < r[1]}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in pending.items()])
    deadline = time.monotonic() + timeout
    while pending:
        for partition in [p for p in pending if p in enough]:
            consumer.pause([TopicPartition(topic, partition)])
            del pending[partition]
        if not pending:
            break
        if time.monotonic() > deadline:
            where = ", ".join(f"[{p}] up to offset {end}" for p, (_, end) in pending.items())
            raise RetryableError(f"reading {topic}: nothing arrived for {timeout:g} s, at {where}")
        msg = consumer.poll(_POLL_S)
        if msg is None:
            continue
        deadline = time.monotonic() + timeout
        partition = int(msg.partition() or 0)
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.pop(partition, None)
                continue
            raise translate_kafka_error(KafkaException(error), f"reading {topic} [{partition}]")
        if partition not in pending:
            continue
        offset = int(msg.offset() or 0)
        end = pending[partition][1]
        if offset >= end:
            del pending[partition]
            continue
        yield msg
        if offset >= end - 1:
            del pending[partition]
    consumer.unassign()


def read_to_end(
    settings: KafkaSettings, topic: str, *, timeout: float = 120.0
) -> Iterator[Message]:
    """Every committed record of ``topic`` up to its end when the read began.

    ``timeout`` bounds the wait for the next record, not the whole read.
    """
    with reader(settings) as consumer:
        ranges = {p: watermarks(consumer, topic, p) for p in partitions_of(consumer, topic)}
        yield from scan(consumer, topic, ranges, timeout)
