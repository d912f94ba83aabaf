"""A three-broker cluster keeps accepting acks=all writes after one broker is SIGKILLed."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.settings import KafkaSettings

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def test_rf3_min_isr2_survives_a_killed_broker(
    kafka_three_node_cluster: LocalKafkaCluster, test_scale: float
) -> None:
    cluster = kafka_three_node_cluster
    settings = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    topic = f"rf3-{uuid.uuid4().hex[:8]}"
    KafkaAdmin(settings).create_topics(
        [TopicSpec(topic, 3, 3, {"min.insync.replicas": "2"})], exist_ok=False
    )
    per_phase = scaled(5000, test_scale, minimum=500)
    acked: set[str] = set()
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            acked.add(msg.value().decode())
        else:
            failed.append(f"{msg.value().decode()}: {err}")

    producer = Producer(settings.producer_config(**{"message.timeout.ms": 60000}))

    def produce(phase: str) -> None:
        for i in range(per_phase):
            producer.produce(
                topic, key=f"k{i}".encode(), value=f"{phase}-{i}".encode(), on_delivery=on_delivery
            )
            producer.poll(0)
        assert producer.flush(90) == 0

    produce("before")
    assert len(acked) == per_phase
    # Kill the leader of partition 0, so at least one partition must fail over.
    victim = KafkaAdmin(settings).describe(topic).partitions[0].leader
    cluster.kill_node(victim)
    produce("after")
    assert not failed, failed[:5]
    assert len(acked) == 2 * per_phase

    survivors = ",".join(n.address for n in cluster.nodes if n.node_id != victim)
    consumer = Consumer(
        KafkaSettings(bootstrap_servers=survivors).consumer_config(f"g-{uuid.uuid4().hex[:8]}")
    )
    consumer.subscribe([topic])
    read: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        while read < acked and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                read.add(msg.value().decode())
    finally:
        consumer.close()
    assert acked - read == set(), f"{len(acked - read)} acknowledged records were lost"
    cluster.restart_node(victim)
