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

from .conftest import RetailRun, worker_metrics

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
    enough = threading.Event()  # the kills are done: stop once ``total`` were sent
    done = threading.Event()
    burst = threading.Event()  # a burst of commands has just reached the broker

    def producer() -> None:
        commands = stock_commands(scaled(5_000, test_scale, 500), 20 * total, 11)
        for n, command in enumerate(commands):
            if n >= total and enough.is_set():
                break
            sent.add(retail_run.producer.send(command))
            if n % 200 == 0:  # about 1,000 commands/s: steady load while the kills land
                retail_run.producer.flush()
                burst.set()
                time.sleep(0.15)
        retail_run.producer.flush()
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    rng = random.Random(3)
    kills = in_transaction = 0
    try:
        # At least five kills at random moments, each just after a burst arrived (the
        # victim is then most likely inside a transaction); more, up to ten, until three
        # of them have landed inside one.
        while kills < 5 or (in_transaction < 3 and kills < 10):
            retail_run.wait_until_working(victim)
            time.sleep(rng.uniform(0.2, 2.0))
            assert not done.is_set(), "the workload ended before the kills"
            burst.clear()
            assert burst.wait(30), "the producer stalled"
            time.sleep(rng.uniform(0.005, 0.04))
            kills += 1
            in_transaction += retail_run.kill_inside_a_transaction(victim)
            victim.start(timeout=120)
    finally:
        enough.set()
        thread.join()
    assert done.is_set()
    assert in_transaction >= 3, f"only {in_transaction} of {kills} kills landed in a transaction"
    retail_run.wait_until_processed(sent, PATIENCE)
    print(f"{len(sent)} commands; {kills} SIGKILLs, {in_transaction} inside a transaction")


def test_a_paused_zombie_cannot_commit_and_rejoins(
    retail_run: RetailRun, test_scale: float
) -> None:
    hold = retail_run.directory / "hold-w1"
    zombie = retail_run.worker(
        "w1",
        STREAMFOLD_WORKER_SESSION_TIMEOUT_MS="6000",
        STREAMFOLD_WORKER_TRANSACTION_TIMEOUT_MS="10000",
        STREAMFOLD_WORKER_PAUSE_IN_TRANSACTION_FILE=str(hold),
    )
    sent = produce(retail_run, 200, scaled(5_000, test_scale, 1_000), seed=5)
    retail_run.wait_until_processed(sent, PATIENCE)
    hold.touch()  # the zombie's next transaction stays open once it has sent records
    more = produce(retail_run, 200, scaled(5_000, test_scale, 1_000), seed=6)
    deadline = time.monotonic() + 60
    while not hold.with_name("hold-w1.held").exists():
        assert time.monotonic() < deadline, "the zombie never held a transaction open"
        time.sleep(0.05)
    zombie.pause()  # inside its open transaction; it stops heartbeating too
    hold.unlink()  # once woken up, it carries on from inside that transaction
    try:
        # w2 takes every partition once the zombie's session expires, after the broker
        # has aborted the zombie's transaction (it waits for that before restoring).
        w2 = retail_run.worker("w2")
        retail_run.wait_until_processed(sent | more, PATIENCE, workers_must_live=False)
    finally:
        zombie.resume()
    # Woken up, the zombie finds its producer fenced (its transaction was aborted and its
    # epoch bumped): nothing it did in it counts. It is no rival of w2 (another instance
    # id), so it rejoins the group with a new producer and works again.
    assert zombie.log_file is not None
    deadline = time.monotonic() + 120
    while "the worker was fenced; rejoining" not in zombie.log_file.read_text("utf-8"):
        assert zombie.running(), "the fenced zombie stopped instead of rejoining"
        assert time.monotonic() < deadline, "the zombie never found out it was fenced"
        time.sleep(0.2)
    # Until the rebalance hands the zombie its share, w2 owns every partition: commands sent
    # before that are w2's to process, and the zombie would have nothing left to do.
    retail_run.wait_until_assigned(zombie, timeout=120)
    later = produce(retail_run, 200, scaled(5_000, test_scale, 1_000), seed=7)
    retail_run.wait_until_working(zombie, timeout=120)
    retail_run.wait_until_processed(sent | more | later, PATIENCE)
    assert w2.running()


def test_a_second_process_with_the_same_instance_id_stops_the_first(
    retail_run: RetailRun, test_scale: float
) -> None:
    """Two workers started with one instance id would fence each other for ever: the one
    fenced finds the other in the group with its own id, and stops with an error."""
    first = retail_run.worker("w1")
    sent = produce(retail_run, 200, scaled(2_000, test_scale, 500), seed=8)
    retail_run.wait_until_processed(sent, PATIENCE)
    second = retail_run.worker("w1", name="w1-twin")  # its producer fences the first's
    more = produce(retail_run, 200, scaled(2_000, test_scale, 500), seed=9)
    assert first.process is not None
    assert first.process.wait(timeout=120) != 0  # at its next transaction
    assert first.log_file is not None
    assert "runs with this worker's instance id 'w1'" in first.log_file.read_text("utf-8")
    retail_run.workers.remove(first)
    retail_run.wait_until_processed(sent | more, PATIENCE)
    assert second.running()


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
    third = None
    for n, command in enumerate(commands):
        sent.add(retail_run.producer.send(command))
        if n == total // 3:
            retail_run.producer.flush()
            third = retail_run.worker("w3")
    retail_run.producer.flush()
    retail_run.wait_until_processed(sent, PATIENCE)
    assert third is not None
    metrics = worker_metrics(third)
    assert metrics["streamfold_worker_assigned_partitions"] > 0
    assert metrics["streamfold_worker_commands_total"] > 0
