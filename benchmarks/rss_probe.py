"""Where a worker's memory goes while it restores: RSS of a bare restore, step by step.

Run by ``worker_bench.py`` as a child process (a fresh interpreter, so the figures are its
own): ``python benchmarks/rss_probe.py BOOTSTRAP CHANGELOG PARTITIONS DIR [--queue-kb N]
[--set KEY=VALUE ...]``.
It restores every partition of ``CHANGELOG`` with
:class:`~streamfold.state.restore.ChangelogRestorer` into fresh stores with the worker's
default RocksDB options and prints, as one JSON object, the RSS in MB after the imports,
at the peak of the restore, after it, after closing the restore consumer, and after
``malloc_trim(0)`` (what the C allocator keeps but no longer uses). ``--queue-kb`` replaces
the restore consumer's ``queued.max.messages.kbytes`` (its prefetch buffer), to show that
buffer's share; ``--set`` any other setting of the restore consumer.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer

from streamfold.state import restore
from streamfold.state.restore import ChangelogRestorer
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment
from streamfold.transport.settings import KafkaSettings


class _Quiet:
    def restore_progress(self, topic: str, partition: int, restored: int, remaining: int) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("changelog")
    parser.add_argument("partitions", type=int)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--queue-kb", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    process = psutil.Process()
    mb = lambda: process.memory_info().rss / 2**20  # noqa: E731
    out: dict[str, Any] = {"after imports": mb()}
    overrides: dict[str, str | int] = dict(item.split("=", 1) for item in args.set)
    if args.queue_kb is not None:
        overrides["queued.max.messages.kbytes"] = args.queue_kb
    if overrides:

        def consumer(config: dict[str, Any]) -> Consumer:
            return Consumer({**config, **overrides})

        restore.Consumer = consumer  # type: ignore[attr-defined]
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], mb())
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    environment = StoreEnvironment(RocksDBOptions())
    stores = [PartitionStore(args.directory / str(p), environment) for p in range(args.partitions)]
    restorer = ChangelogRestorer(KafkaSettings(bootstrap_servers=args.bootstrap), _Quiet())
    started = time.perf_counter()
    for partition, store in enumerate(stores):
        restorer.add(args.changelog, partition, store)
    while restorer.restoring:
        restorer.step(0.05)
    elapsed = time.perf_counter() - started
    done.set()
    out["peak during restore"] = peak[0]
    out["after restore"] = mb()
    restorer.close()
    out["after closing the restore consumer"] = mb()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    out["after malloc_trim(0)"] = mb()
    out["restore seconds"] = elapsed
    for store in stores:
        store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
