"""Whether a sink has projected everything its topics hold (for the demo, tests, operators).

A sink commits, per partition, the offset after the last record it made durable. A topic
written in transactions ends with a commit marker, which has an offset but is no record, so
"caught up" compares the committed offset with the offset after each partition's last
*record*: :func:`record_ends` finds it by reading the partitions' tails (read_committed),
all at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamfold.transport.settings import KafkaSettings

__all__ = ["caught_up", "record_ends"]

_TIMEOUT = 30.0


def record_ends(kafka: KafkaSettings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Per partition of ``topics``, the offset after its last committed record (0 if none).

    One consumer reads the tails of every partition at once (a window before each
    partition's end, read_committed, to its end-of-partition event); a partition whose
    window held only markers or aborted records is read again with a window 16 times
    longer. An empty partition is not read at all.
    """
    consumer = Consumer(
        kafka.consumer_config(
            f"streamfold-ends-{uuid.uuid4().hex}",
            **{"enable.partition.eof": True, "fetch.wait.max.ms": 10},
        )
    )
    ends: dict[tuple[str, int], int] = {}
    try:
        marks: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=_TIMEOUT).topics[topic].partitions
            for partition in partitions:
                tp = TopicPartition(topic, partition)
                marks[(topic, partition)] = consumer.get_watermark_offsets(tp, _TIMEOUT)
        windows = {key: 64 for key, (low, high) in marks.items() if high > low}
        ends.update({key: 0 for key in marks.keys() - windows.keys()})
        while windows:
            starts = {key: max(marks[key][0], marks[key][1] - w) for key, w in windows.items()}
            last = _read_tails(consumer, starts)
            for key in list(windows):
                if last[key] >= 0 or starts[key] == marks[key][0]:
                    ends[key] = last[key] + 1
                    del windows[key]
                else:
                    windows[key] *= 16  # only markers (or aborted records): look further back
    finally:
        consumer.close()
    return ends


def _read_tails(
    consumer: Consumer, starts: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Read each partition from its start to its end; the offset of its last record (or -1)."""
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    last = dict.fromkeys(starts, -1)
    reading = set(starts)
    while reading:
        message = consumer.poll(_TIMEOUT)
        if message is None:
            raise TimeoutError(f"reading the tails of {len(reading)} partitions timed out")
        key = (message.topic() or "", message.partition() or 0)
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"reading {key[0]}/{key[1]}: {error}")
            reading.discard(key)
        elif key in last:
            last[key] = max(last[key], message.offset() or 0)
    consumer.unassign()
    return last


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
