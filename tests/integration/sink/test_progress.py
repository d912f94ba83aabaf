"""Where each partition's last committed record ends, past commit and abort markers."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from streamfold.sink.progress import record_ends
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _transaction(producer: Producer, topic: str, partition: int, n: int, commit: bool) -> None:
    producer.begin_transaction()
    for i in range(n):
        producer.produce(topic, f"v{i}".encode(), b"k", partition=partition)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)
        producer.abort_transaction(30)


def test_record_ends_reads_every_tail_past_markers_and_aborted_records(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    topics = [topic_factory(partitions=3), topic_factory(partitions=2)]
    producer = Producer(
        kafka_settings.transactional_producer_config(f"ends-{uuid.uuid4().hex[:8]}")
    )
    producer.init_transactions(30)
    first, second = topics
    _transaction(producer, first, 1, 5, commit=True)
    _transaction(producer, first, 1, 3, commit=False)  # the tail: aborted records, markers
    for _ in range(4):
        _transaction(producer, first, 2, 50, commit=True)
    _transaction(producer, first, 2, 100, commit=False)  # longer than the first window
    _transaction(producer, second, 0, 1, commit=True)
    ends = record_ends(kafka_settings, topics)
    assert ends == {
        (first, 0): 0,  # empty
        (first, 1): 5,
        (first, 2): 200 + 3,  # 4 commits of 50, each followed by its marker
        (second, 0): 1,
        (second, 1): 0,
    }
