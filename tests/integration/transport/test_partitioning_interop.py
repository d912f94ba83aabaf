"""streamfold, kcat and Kafka's Java producer put every key on the same partition."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from streamfold.embedded.jars import ensure_kafka_jars
from streamfold.embedded.java import find_java
from streamfold.transport.partitioning import partition_for
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration

PARTITIONS = 6
KEYS = [f"store-{i % 97}/item-{i}" for i in range(1000)]


def _partition_by_key(settings: KafkaSettings, topic: str, group: str) -> dict[str, int]:
    consumer = Consumer(settings.consumer_config(group))
    consumer.subscribe([topic])
    seen: dict[str, int] = {}
    try:
        idle = 0
        while len(seen) < len(KEYS) and idle < 40:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 1
                continue
            assert msg.error() is None, msg.error()
            seen[msg.key().decode()] = msg.partition()
    finally:
        consumer.close()
    return seen


def test_same_partition_per_key_across_clients(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id_factory: Callable[[], str],
    streamfold_cache_dir: Path,
) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat not found: the set-up script installs it (apt-get install kcat)")
    lines = "".join(f"{k}:{k}\n" for k in KEYS).encode()

    ours = topic_factory(partitions=PARTITIONS)
    producer = Producer(kafka_settings.producer_config())
    for key in KEYS:
        producer.produce(ours, key=key.encode(), value=key.encode())
    assert producer.flush(30) == 0

    via_kcat = topic_factory(partitions=PARTITIONS)
    subprocess.run(
        [
            kcat,
            "-P",
            "-b",
            kafka_settings.bootstrap_servers,
            "-t",
            via_kcat,
            "-K",
            ":",
            "-X",
            "partitioner=murmur2_random",
        ],
        input=lines,
        check=True,
        timeout=60,
    )

    via_java = topic_factory(partitions=PARTITIONS)
    dist = ensure_kafka_jars(streamfold_cache_dir)
    subprocess.run(
        [
            str(find_java()),
            "-Xmx256m",
            "-cp",
            dist.classpath,
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            kafka_settings.bootstrap_servers,
            "--topic",
            via_java,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        input=lines,
        check=True,
        timeout=120,
        capture_output=True,
    )

    by_ours = _partition_by_key(kafka_settings, ours, group_id_factory())
    by_kcat = _partition_by_key(kafka_settings, via_kcat, group_id_factory())
    by_java = _partition_by_key(kafka_settings, via_java, group_id_factory())
    assert len(by_ours) == len(by_kcat) == len(by_java) == len(KEYS)
    assert len(set(by_ours.values())) == PARTITIONS  # the keys really spread
    mismatched_kcat = [k for k in KEYS if by_ours[k] != by_kcat[k]]
    mismatched_java = [k for k in KEYS if by_ours[k] != by_java[k]]
    assert not mismatched_kcat, f"kcat differs on {len(mismatched_kcat)} keys"
    assert not mismatched_java, f"Java producer differs on {len(mismatched_java)} keys"
    # And our pure-Python murmur2 predicts where each key lands.
    assert all(partition_for(k, PARTITIONS) == by_ours[k] for k in KEYS)
