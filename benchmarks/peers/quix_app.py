"""The store_stock fold as a Quix Streams application (the comparison's peer).

``python quix_app.py PLAN.json`` in the Quix virtualenv the harness makes (quixstreams and
fastavro; no streamfold). It runs until SIGTERM: one stateful ``apply`` per command reads the
aggregate's entry from Quix's RocksDB state (keyed by the record key, the aggregate id; its
changelog topic on), folds it with :mod:`fold`, writes the entry back and produces the
event, state and result records through the application's own producer, so they belong to
the checkpoint (the Kafka transaction under exactly-once) like any ``.to()`` output. The
producer is used directly because ``.to()`` cannot send the result to the command's own
partition number; it is also the cheaper path. Commits follow the worker's rules: every
``commit_interval_ms`` or ``max_batch`` commands.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fold import Fold, Plan
from quixstreams import Application, State, message_context
from quixstreams.models import TopicConfig

ENTRY = "entry"


def main() -> None:
    plan = Plan.load(sys.argv[1])
    fold = Fold(plan)
    app = Application(
        broker_address=plan.bootstrap,
        consumer_group=plan.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once" if plan.exactly_once else "at-least-once",
        commit_interval=plan.commit_interval_ms / 1000,
        commit_every=plan.max_batch,
        state_dir=plan.state_dir,
        use_changelog_topics=True,
        loglevel=logging.WARNING,
        # The worker's producer tuning (runtime/worker.py, benchmarks/handwritten_loop.py).
        producer_extra_config={
            "linger.ms": 2,
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
        },
        consumer_extra_config={"fetch.wait.max.ms": 20},
    )
    topic = app.topic(
        plan.commands,
        key_deserializer="bytes",
        value_deserializer="bytes",
        config=TopicConfig(num_partitions=plan.partitions, replication_factor=1),
    )
    producer = app._producer  # the checkpoint's (transactional) producer

    def process(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> None:
        partition = message_context().partition
        entry, outputs = fold.handle(
            value, dict(headers or ()), timestamp, partition, state.get(ENTRY)
        )
        if entry is not None:
            state.set(ENTRY, entry)
        for out_topic, out_key, out_value, out_headers, out_partition in outputs:
            producer.produce(
                topic=out_topic,
                key=out_key,
                value=out_value,
                headers=out_headers,
                partition=out_partition,
            )

    sdf = app.dataframe(topic)
    sdf.update(process, stateful=True, metadata=True)
    app.run()


if __name__ == "__main__":
    main()
