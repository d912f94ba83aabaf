"""Whether a sink has projected everything its topics hold (for the demo, tests, operators).

A sink commits, per partition, the offset after the last record it made durable. A topic
written in transactions ends with a commit marker, which has an offset but is no record, so
"caught up" compares the committed offset with the offset after each partition's last
*record*: :func:`record_ends` finds it by reading the partition's tail (read_committed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamfold.transport.settings import KafkaSettings

__all__ = ["caught_up", "record_ends"]

_TIMEOUT = 30.0


def record_ends(kafka: KafkaSettings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Per partition of ``topics``, the offset after its last committed record (0 if none)."""
    consumer = Consumer(
        kafka.consumer_config(
            f"streamfold-ends-{uuid.uuid4().hex}", **{"enable.partition.eof": True}
        )
    )
    ends: dict[tuple[str, int], int] = {}
    try:
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=_TIMEOUT).topics[topic].partitions
            for partition in partitions:
                ends[(topic, partition)] = _tail_end(consumer, topic, partition)
    finally:
        consumer.close()
    return ends


def _tail_end(consumer: Consumer, topic: str, partition: int) -> int:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), _TIMEOUT)
    window = 64
    while True:
        start = max(low, high - window)
        consumer.assign([TopicPartition(topic, partition, start)])
        last = -1
        while True:
            message = consumer.poll(_TIMEOUT)
            if message is None:
                raise TimeoutError(f"reading the tail of {topic}/{partition} timed out")
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    break
                raise RuntimeError(f"reading {topic}/{partition}: {error}")
            last = message.offset() or 0
        if last >= 0 or start == low:
            return last + 1 if last >= 0 else 0
        window *= 16  # only markers (or aborted records) in the tail: look further back


def caught_up(kafka: KafkaSettings, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Whether ``group`` has committed every partition up to ``ends``, with no open intent."""
    consumer = Consumer(kafka.consumer_config(group))
    try:
        partitions = [TopicPartition(t, p) for t, p in ends]
        for tp in consumer.committed(partitions, timeout=_TIMEOUT):
            end = ends[(tp.topic, tp.partition)]
            if end and (tp.metadata or tp.offset < end):
                return False
        return True
    finally:
        consumer.close()
