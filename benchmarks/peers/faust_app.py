"""The store_stock fold as a faust-streaming agent (the comparison's peer).

``python faust_app.py PLAN.json`` in the faust virtualenv the harness makes
(faust-streaming, rocksdict, fastavro; no streamfold). It runs until SIGTERM: one agent over
the commands topic reads the aggregate's entry from a table (``store="rocksdb://"``, which
faust-streaming backs with rocksdict when python-rocksdb is not installed; faust knows no
``rocksdict://`` store), folds it with :mod:`fold`, writes the entry back (faust sends each
table write to the table's changelog topic) and sends the event, state and result records.
The guarantee is the plan's: ``exactly_once`` (faust's transactional producer per source
partition) or ``at_least_once``. Commits follow the worker's rules: every
``commit_interval_ms`` or ``max_batch`` commands.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import faust
from fold import Fold, Plan


def build(plan: Plan) -> faust.App:
    fold = Fold(plan)
    app = faust.App(
        plan.group,
        broker=f"kafka://{plan.bootstrap}",
        store="rocksdb://",
        datadir=plan.state_dir,
        processing_guarantee="exactly_once" if plan.exactly_once else "at_least_once",
        topic_partitions=plan.partitions,
        topic_replication_factor=1,
        broker_commit_every=plan.max_batch,
        broker_commit_interval=plan.commit_interval_ms / 1000,
        producer_linger_ms=2,
        producer_compression_type="lz4",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Tables take the app's serializers: raw keys (aggregate ids), JSON entries.
        key_serializer="raw",
        value_serializer="json",
    )
    commands = app.topic(plan.commands, key_serializer="raw", value_serializer="raw")
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in (plan.events, plan.state, plan.results)
    }
    entries = app.Table("store_stock", default=None, partitions=plan.partitions)

    @app.agent(commands)
    async def process(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            key = event.key
            entry, records = fold.handle(
                event.value,
                dict(message.headers or ()),
                round(message.timestamp * 1000),
                message.partition,
                entries.get(key),
            )
            if entry is not None:
                entries[key] = entry
            for out_topic, out_key, out_value, out_headers, out_partition in records:
                await outputs[out_topic].send(
                    key=out_key, value=out_value, headers=out_headers, partition=out_partition
                )

    return app


def main() -> None:
    plan = Plan.load(sys.argv[1])
    Path(plan.state_dir).mkdir(parents=True, exist_ok=True)
    app = build(plan)
    worker = faust.Worker(app, loglevel=logging.WARNING, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
