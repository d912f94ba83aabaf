"""Any producer is safe: commands from any partitioner, without a key or on an explicit wrong
partition are decided on their aggregate's partition only, through SIGKILLs.

Sizes follow STREAMFOLD_TEST_SCALE (full size at 1.0: 30k commands over 3k aggregates).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from topologies.retail.workload import stock_commands

from streamfold.testing.pytest_plugin import scaled

from .conftest import RetailRun
from .producers import WAYS, MixedSender

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATIENCE = 600.0


def test_commands_from_any_producer_land_on_their_aggregate_through_sigkills(
    retail_run: RetailRun, test_scale: float
) -> None:
    retail_run.worker("w1")
    victim = retail_run.worker("w2")
    sender = MixedSender(
        retail_run.settings, retail_run.codec, retail_run.producer, retail_run.prefix, 6, seed=29
    )
    total = scaled(30_000, test_scale, 4_000)
    aggregates = scaled(3_000, test_scale, 300)
    sent: set[str] = set()
    enough = threading.Event()  # the kills are done: stop once ``total`` were sent
    done = threading.Event()
    failure: list[Exception] = []

    def produce() -> None:
        try:
            for n, command in enumerate(stock_commands(aggregates, 20 * total, 23)):
                if n >= total and enough.is_set():
                    break
                sent.add(sender.send(command))
                if n % 200 == 0:  # about 1,000 commands/s: steady load while the kills land
                    sender.flush()
                    time.sleep(0.15)
            sender.flush()
            done.set()
        except Exception as exc:  # noqa: BLE001 - the main thread asserts there is none
            failure.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    rng = random.Random(5)
    kills = kills_in_transaction = 0
    try:
        while kills_in_transaction < 3 and kills < 8:
            retail_run.wait_until_working(victim)
            time.sleep(rng.uniform(0.2, 2.0))
            assert not done.is_set(), "the workload ended before the kills"
            kills += 1
            kills_in_transaction += retail_run.kill_inside_a_transaction(victim)
            victim.start(timeout=120)
    finally:
        enough.set()
        thread.join()
    assert not failure, failure
    assert done.is_set()
    sender.close()
    assert all(sender.counts[way] > 0 for way in WAYS), sender.counts
    assert sender.misplaced > 0
    assert kills_in_transaction == 3, f"{kills} kills, {kills_in_transaction} in a transaction"
    retail_run.wait_until_processed(sent, PATIENCE)
    report = retail_run.check_stock(sent)
    print(  # for the run's record (pytest -s)
        f"{len(sent)} commands {dict(sender.counts)}, {sender.misplaced} keyed ones misplaced; "
        f"{kills} SIGKILLs, {kills_in_transaction} inside a transaction; "
        f"{report.events} events over {report.aggregates} aggregates"
    )
