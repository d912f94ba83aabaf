"""The embedded broker is a real Kafka: records round-trip, transactions isolate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _drain(consumer: Consumer, expected: int, idle_polls: int = 10) -> list[tuple[bytes, bytes]]:
    """Read until ``expected`` records arrived and then ``idle_polls`` polls bring nothing."""
    out: list[tuple[bytes, bytes]] = []
    idle = 0
    while idle < idle_polls:
        msg = consumer.poll(0.5)
        if msg is None:
            if len(out) >= expected:
                idle += 1
            continue
        assert msg.error() is None, msg.error()
        out.append((msg.key(), msg.value()))
    return out


def _consumer(settings: KafkaSettings, group: str, topic: str, isolation: str) -> Consumer:
    consumer = Consumer(settings.consumer_config(group, **{"isolation.level": isolation}))
    consumer.subscribe([topic])
    return consumer


def test_produce_and_consume(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id_factory: Callable[[], str],
) -> None:
    topic = topic_factory(partitions=3)
    producer = Producer(kafka_settings.producer_config())
    for i in range(100):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    consumer = _consumer(kafka_settings, group_id_factory(), topic, "read_committed")
    try:
        got = _drain(consumer, 100, idle_polls=2)
    finally:
        consumer.close()
    assert sorted(got) == sorted((f"k{i}".encode(), f"v{i}".encode()) for i in range(100))


def test_aborted_batch_is_invisible_and_committed_batch_is_visible(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id_factory: Callable[[], str],
) -> None:
    topic = topic_factory(partitions=2)
    producer = Producer(kafka_settings.transactional_producer_config(group_id_factory()))
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(50):
        producer.produce(topic, key=b"aborted", value=f"a{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)

    producer.begin_transaction()
    for i in range(50):
        producer.produce(topic, key=b"committed", value=f"c{i}".encode())
    producer.commit_transaction(30)

    committed = _consumer(kafka_settings, group_id_factory(), topic, "read_committed")
    uncommitted = _consumer(kafka_settings, group_id_factory(), topic, "read_uncommitted")
    try:
        seen_committed = _drain(committed, 50, idle_polls=4)
        seen_all = _drain(uncommitted, 100, idle_polls=4)
    finally:
        committed.close()
        uncommitted.close()
    assert {k for k, _ in seen_committed} == {b"committed"}
    assert len(seen_committed) == 50
    # The aborted records are in the log: a read_uncommitted consumer sees them.
    assert {k for k, _ in seen_all} == {b"committed", b"aborted"}
    assert len(seen_all) == 100
