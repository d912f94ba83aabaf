"""The write side's promises under load, crashes, zombies, restores and scale-out.

Sizes follow STREAMFOLD_TEST_SCALE (full size at 1.0: 100k commands over 10k aggregates).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from topologies.retail.workload import stock_commands

from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment
from streamfold.testing.pytest_plugin import scaled

from .conftest import RetailRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


PATIENCE = 600.0  # seconds for a whole acceptance workload to be processed


def produce(run: RetailRun, aggregates: int, commands: int, seed: int = 7) -> set[str]:
    sent = {run.producer.send(c) for c in stock_commands(aggregates, commands, seed)}
    run.producer.flush()
    return sent


def store_digests(state_dir: Path) -> dict[str, str]:
    """Digest of every partition store under a worker's state directory."""
    environment = StoreEnvironment(RocksDBOptions(block_cache_mb=8, write_buffer_mb=8))
    digests = {}
    for path in sorted(p.parent for p in state_dir.rglob("CURRENT")):
        store = PartitionStore(path, environment)
        digests[str(path.relative_to(state_dir))] = store.digest()
        store.close()
    return digests


def test_two_workers_process_everything_exactly_once(
    retail_run: RetailRun, test_scale: float
) -> None:
    retail_run.worker("w1")
    retail_run.worker("w2")
    sent = produce(retail_run, scaled(10_000, test_scale, 500), scaled(100_000, test_scale, 5_000))
    retail_run.wait_until_processed(sent, PATIENCE)
    report = retail_run.check_stock(sent)
    assert report.results == len(sent)
    assert report.outcomes["accepted"] > report.outcomes["rejected"] > 0


def test_sigkill_five_times_while_producing(retail_run: RetailRun, test_scale: float) -> None:
    retail_run.worker("w1")
    victim = retail_run.worker("w2")
    total = scaled(50_000, test_scale, 5_000)
    sent: set[str] = set()
    done = threading.Event()

    def producer() -> None:
        for n, command in enumerate(stock_commands(scaled(5_000, test_scale, 500), total, 11)):
            sent.add(retail_run.producer.send(command))
            if n % 500 == 0:
                retail_run.producer.flush()
                time.sleep(0.05)
        retail_run.producer.flush()
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    rng = random.Random(3)
    for _ in range(5):
        time.sleep(rng.uniform(1.0, 4.0))
        victim.kill()
        victim.start(timeout=120)
    thread.join()
    assert done.is_set()
    retail_run.wait_until_processed(sent, PATIENCE)


def test_a_paused_zombie_cannot_commit(retail_run: RetailRun, test_scale: float) -> None:
    zombie = retail_run.worker("w1", STREAMFOLD_WORKER_SESSION_TIMEOUT_MS="6000")
    sent = produce(retail_run, 200, scaled(5_000, test_scale, 1_000), seed=5)
    zombie.pause()  # it holds an open transaction and its partitions, and stops answering
    try:
        retail_run.worker("w2")  # takes every partition once the zombie's session expires
        more = produce(retail_run, 200, scaled(5_000, test_scale, 1_000), seed=6)
        retail_run.wait_until_processed(sent | more, PATIENCE)
    finally:
        zombie.resume()
    # Woken up, the zombie finds itself fenced (it stops with an error) or, if it held no
    # open transaction, out of the group (it rejoins as a new member); nothing it does counts.
    time.sleep(5)
    retail_run.wait_until_processed(sent | more, PATIENCE, workers_must_live=False)
    if not zombie.running():
        assert zombie.process is not None and zombie.process.returncode != 0
        log = zombie.log_file.read_text(encoding="utf-8") if zombie.log_file else ""
        assert "fenced" in log


def test_a_deleted_state_directory_is_restored_identically(
    retail_run: RetailRun, test_scale: float
) -> None:
    worker = retail_run.worker("w1")
    sent = produce(retail_run, scaled(5_000, test_scale, 500), scaled(20_000, test_scale, 2_000))
    retail_run.wait_until_processed(sent, PATIENCE)
    assert worker.stop() == 0
    before = store_digests(worker.state_dir)
    assert len(before) == 18  # 3 aggregates x 6 partitions
    for store in worker.state_dir.rglob("*"):
        if store.is_file():
            store.unlink()
    worker.start(timeout=180)  # ready = every store restored
    assert worker.stop() == 0
    assert store_digests(worker.state_dir) == before


def test_a_third_worker_joins_mid_stream(retail_run: RetailRun, test_scale: float) -> None:
    retail_run.worker("w1")
    retail_run.worker("w2")
    total = scaled(60_000, test_scale, 6_000)
    commands = list(stock_commands(scaled(6_000, test_scale, 600), total, 13))
    sent = set()
    for n, command in enumerate(commands):
        sent.add(retail_run.producer.send(command))
        if n == total // 3:
            retail_run.producer.flush()
            retail_run.worker("w3")
    retail_run.producer.flush()
    retail_run.wait_until_processed(sent, PATIENCE)
