"""The command processor alone, without Kafka: CPU per command, for profiling the hot path.

``python benchmarks/processor_bench.py [--commands N] [--aggregates N] [--profile FILE]``
runs ``CommandProcessor.process`` over pre-encoded store-stock commands (the worker's
benchmark workload) into a RocksDB store and an outbox that drops what it is sent, committing
the store every ``--batch`` commands as the worker does, and prints microseconds per command
(best of ``--rounds``). ``--compare`` interleaves rounds of a second processor whose codec
uses fastavro only (the compiled writers and readers switched off), as the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topologies.retail.domain import retail, stock
from topologies.retail.workload import stock_commands

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.headers import Headers
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.domain.naming import aggregate_topics
from streamfold.runtime.command_processor import CommandProcessor
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment


class _Drop:
    """An outbox that counts what it is sent."""

    max_record_bytes = 1_000_000

    def __init__(self) -> None:
        self.records = 0

    def quarantined(self, input_id: str) -> None:
        return None

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        self.records += 1


class _Counters:
    def command(self, aggregate: str, outcome: str, n: int = 1) -> None:
        pass

    def dead_letter(self, aggregate: str, reason: str) -> None:
        pass

    def forwarded(self, aggregate: str) -> None:
        pass


def _messages(codec: AvroCodec, aggregates: int, n: int) -> list[Message]:
    topic = aggregate_topics("retail", "store_stock").commands
    writers: dict[type[Any], Any] = {}
    out = []
    for offset, command in enumerate(stock_commands(aggregates, n)):
        writer = writers.get(type(command))
        if writer is None:
            writer = writers[type(command)] = codec.writer(topic, type(command), retail.namespace)
        out.append(
            Message(
                topic=topic,
                partition=0,
                offset=offset,
                key=stock.aggregate_id(command).encode(),
                value=writer.encode(command),
                headers=[("command_id", str(uuid.uuid4()).encode())],
                timestamp=(1, 1_760_000_000_000 + offset),
            )
        )
    return out


def _fastavro_only(processor: CommandProcessor) -> CommandProcessor:
    """Switch off the processor's compiled writers and readers (a baseline for comparison)."""
    writers = [processor._state_writer, processor._result_writer]
    for writer in [*writers, *processor._event_writers.values()]:
        writer._compiled = None
    for reader in (processor._commands, processor._states):
        original = reader._plan

        def plan(schema_id: int, original: Any = original) -> Any:
            return dataclasses.replace(original(schema_id), compiled=None)

        reader._plan = plan  # type: ignore[method-assign]
    return processor


def _round(
    processor: CommandProcessor, messages: list[Message], directory: Path, batch: int
) -> float:
    store = PartitionStore(directory, StoreEnvironment(RocksDBOptions()))
    outbox = _Drop()
    started = time.perf_counter()
    for i, message in enumerate(messages, 1):
        processor.process(message, store, outbox)
        if i % batch == 0:
            store.commit(i)
    store.commit(len(messages))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--aggregates", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--compare", action="store_true", help="against fastavro alone")
    args = parser.parse_args()
    codec = AvroCodec(InMemorySchemaRegistry())

    def processor() -> CommandProcessor:
        return CommandProcessor(
            stock,
            retail.namespace,
            codec,
            partitions=1,  # every message is on partition 0: the aggregate's, so none moves
            idempotency_window=32,
            handler_retries=3,
            counters=_Counters(),
        )

    messages = _messages(codec, args.aggregates, args.commands)
    candidates = {"compiled codec": processor()}
    if args.compare:
        candidates["fastavro only"] = _fastavro_only(processor())
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, candidate in candidates.items():
                directory = Path(tmp) / f"{r}-{len(timings[name])}-{name}"
                timings[name].append(_round(candidate, messages, directory, args.batch))
        if args.profile:
            from pyinstrument import Profiler  # noqa: PLC0415

            with Profiler(interval=0.0005) as profiler:
                _round(candidates["compiled codec"], messages, Path(tmp) / "profiled", args.batch)
            args.profile.write_text(profiler.output_html())
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    for name, times in timings.items():
        best = min(times)
        print(
            f"{name}: {args.commands:,} commands, best {best * 1e6 / args.commands:.1f} "
            f"us/command ({args.commands / best:,.0f}/s); rounds "
            + ", ".join(f"{t * 1e6 / args.commands:.1f}" for t in times)
        )


if __name__ == "__main__":
    main()
