"""Child process of test_successor.py: a successor's take-overs against a fresh broker.

Run as ``python successor_probe.py <bootstrap> <tries>``; prints the owners found per try
and exits 0, unless librdkafka takes the process down.
"""

from __future__ import annotations

import sys
import uuid

from confluent_kafka import TopicPartition

from streamfold.runtime.failover import Successor
from streamfold.transport.settings import KafkaSettings


def main() -> None:
    bootstrap, tries = sys.argv[1], int(sys.argv[2])
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    for _ in range(tries):
        group = f"streamfold.probe-{uuid.uuid4().hex[:8]}"  # a group the broker never saw
        successor = Successor(settings, group, f"{group}.w1")
        try:
            print(successor.take_over([TopicPartition("probe.commands", 0)]), flush=True)
        finally:
            successor.close()
    print("survived", flush=True)


if __name__ == "__main__":
    main()
