"""The broker's floor under exactly-once latency: bare Kafka transactions, no processing.

``python benchmarks/transaction_floor.py [--transactions N] [--commands N]`` starts a
single-node local broker and runs the shape of a worker's checkpoint with nothing else:
consume ``--commands`` records (read_committed, a consumer group), begin a transaction,
produce four records per command (event, state, result, changelog) to four 6-partition
topics, flush, ``send_offsets_to_transaction``, ``commit_transaction``; repeat. It prints
the percentiles of each phase. A command's exactly-once latency cannot be lower than the
commit of the transaction carrying it, so this p99 bounds what any worker (ours, the
hand-written loop) can reach on the machine it runs on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamfold.cli.edge import default_cache_dir
from streamfold.embedded.kafka import LocalKafkaCluster

OUTPUTS = ("events", "state", "results", "changelog")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--commands", type=int, default=30, help="per transaction")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="txn-floor-") as tmp,
        LocalKafkaCluster(Path(tmp) / "kafka", default_cache_dir()) as kafka,
    ):
        phases = measure_floor(kafka.bootstrap_servers, args.transactions, args.commands)
    print(f"{args.transactions} transactions of {args.commands} commands x 4 records")
    for name, values in phases.items():
        ordered = sorted(values)
        p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
        print(f"{name:>16}: p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms")


def measure_floor(
    bootstrap: str, transactions: int, commands: int, prefix: str = ""
) -> dict[str, list[float]]:
    """Run ``transactions`` bare checkpoints of ``commands`` each on topics named with
    ``prefix``; the seconds of each phase and of the whole checkpoint (``whole checkpoint``)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = {t: f"{prefix}{t}" for t in ("commands", *OUTPUTS)}
    topics = [NewTopic(name, 6, 1) for name in names.values()]
    for future in admin.create_topics(topics).values():
        future.result()
    feeder = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(transactions * commands):
        feeder.produce(names["commands"], b"x" * 100, str(i).encode())
    feeder.flush()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}floor",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([names["commands"]])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"{prefix}floor",
            "linger.ms": 5,
            "compression.type": "lz4",
            "acks": "all",
        }
    )
    producer.init_transactions()
    phases: dict[str, list[float]] = {"flush": [], "send offsets": [], "commit": []}
    totals: list[float] = []
    while len(totals) < transactions:
        messages = consumer.consume(commands, 1.0)
        if not messages:
            continue
        started = time.perf_counter()
        producer.begin_transaction()
        for message in messages:
            for topic in OUTPUTS:
                producer.produce(names[topic], message.value(), message.key())
        a = time.perf_counter()
        producer.flush()
        b = time.perf_counter()
        offsets = [
            TopicPartition(m.topic(), m.partition(), (m.offset() or 0) + 1) for m in messages
        ]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
        c = time.perf_counter()
        producer.commit_transaction()
        d = time.perf_counter()
        phases["flush"].append(b - a)
        phases["send offsets"].append(c - b)
        phases["commit"].append(d - c)
        totals.append(d - started)
        time.sleep(0.003)  # the worker's transaction gap
    consumer.close()
    del producer, feeder, admin  # their connections close before the broker stops
    return {**phases, "whole checkpoint": totals}


if __name__ == "__main__":
    main()
