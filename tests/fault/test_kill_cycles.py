"""Kill cycles under load: SIGKILLed workers and sinks, and an unavailable ClickHouse, lose
and double nothing.

Two workers, a chDB sink and the gateway run on one broker with commands flowing at a
steady rate (straight to Kafka, and through the gateway with PROJECTED waits). The test
SIGKILLs a worker or the sink, in turn, ``max(4, 20 * scale)`` times (20 at full scale),
restarting each; in the middle ClickHouse is unavailable for ``max(10, 60 * scale)`` s
(another process owns the chDB path). A kill counts as inside the work only on evidence
(``tests/fault/stack.py``): a worker's open transaction still open after it died, the
sink's batch intents still committed and replayed. Fewer than 3 such kills fail the test;
it keeps killing, a bounded number of extra times, until 3 have landed. Then:

- every command has exactly one result, the events' versions are contiguous and the state
  is their fold, for each aggregate: 0 lost, 0 duplicated;
- ClickHouse holds each event once;
- every PROJECTED wait was answered (200) or answered 202 and its command found later;
- the stall after each kill (the longest gap between results, and between PROJECTED
  answers) goes to ``benchmarks/reports/faults.md``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.fault.report import write_section
from tests.fault.stack import Outage, RetailStack, SteadyLoad, median
from tests.fault.watch import longest_gap
from tests.integration.runtime.conftest import RetailRun, retail_run

__all__ = ["retail_run"]

pytestmark = [pytest.mark.fault, pytest.mark.integration]

PATIENCE = 600.0
LANDED = 3  # kills that must land inside a transaction or a batch, at any scale


@pytest.mark.timeout(2400)
def test_kill_cycles_under_load_lose_and_double_nothing(
    retail_run: RetailRun, tmp_path: Path, test_scale: float
) -> None:
    cycles = max(4, round(20 * test_scale))
    extra = max(6, cycles)  # more kills allowed, until LANDED of them landed inside
    outage = max(10.0, 60.0 * test_scale)
    pause = max(3.0, 10.0 * test_scale)  # seconds between a restart and the next kill
    rng = random.Random(21)
    stack = RetailStack(retail_run, tmp_path)
    load = SteadyLoad(stack)
    kills: list[tuple[str, bool, float]] = []  # (what, inside, kill time)
    happened: Outage | None = None
    try:
        stack.start()
        load.start()
        time.sleep(pause)
        n = 0
        while n < cycles or (sum(k[1] for k in kills) < LANDED and n < cycles + extra):
            if n == cycles // 2 and happened is None:
                happened = stack.outage(outage, load)
                kills.append(("sink, then ClickHouse away", happened.inside, happened.started))
                time.sleep(pause)
            at = time.monotonic()
            if n % 2 == 0:
                victim = rng.choice(stack.workers)
                kills.append((f"worker {victim.instance_id}", stack.kill_worker(victim), at))
            else:
                kills.append(("sink", stack.kill_sink(), at))
            assert not load.failures, load.failures[:3]
            n += 1
            time.sleep(rng.uniform(pause / 2, pause))
        load.stop()
        assert not load.failures, load.failures[:3]
        assert len(load.projected) > 10, "the gateway's load never ran"
        stalls = [
            (
                what,
                inside,
                stack.results_stall(at, 30.0),
                longest_gap(load.answered_200(), at, 30.0),
            )
            for what, inside, at in kills
        ]
        found = stack.check(load, PATIENCE)
    finally:
        load.stop()
        stack.stop()
    assert found.problems() == [], found.problems()[:10]
    assert happened is not None
    workers_inside = sum(inside for what, inside, _ in kills if what.startswith("worker"))
    sinks_inside = sum(inside for what, inside, _ in kills if not what.startswith("worker"))
    assert workers_inside + sinks_inside >= LANDED, (
        f"only {workers_inside + sinks_inside} of {len(kills)} kills landed inside: {kills}"
    )
    worker_kills = sum(what.startswith("worker") for what, _, _ in kills)
    results = [s[2] for s in stalls]
    projected = [s[3] for s in stalls]
    lines = "\n".join(
        f"| {i} | {what} | {'yes' if inside else 'no'} | {r:.2f} s | {p:.2f} s |"
        for i, (what, inside, r, p) in enumerate(stalls, 1)
    )
    report = found.reports["store_stock"]
    write_section(
        "kill-cycles",
        "Kill cycles under load (1 broker): SIGKILLed workers and sinks, ClickHouse away",
        f"2 workers, a chDB sink and the gateway; commands at about 200/s straight to Kafka"
        f" and a few a second through the gateway with PROJECTED waits. {len(kills)} SIGKILLs"
        f" ({cycles} cycles planned, a worker and the sink in turn, each restarted):"
        f" {worker_kills} of a worker, {workers_inside} of them inside an open transaction"
        f" (its partitions' last stable offset still lagging 2 s after the kill);"
        f" {len(kills) - worker_kills} of the sink, {sinks_inside} of them inside an"
        f" unfinished batch (its intents still committed, and replayed by the next sink).\n\n"
        f"{load.commands:,} commands: 0 lost, 0 duplicated, versions contiguous"
        f" ({report.events:,} store-stock events, {report.results:,} results); ClickHouse"
        f" {found.rows:,} event rows, {found.unique:,} distinct; PROJECTED waits:"
        f" {sum(s == '200' for s in load.projected.values())} answered,"
        f" {found.late} answered 202 and found later; {len(load.retried)} sent again with"
        f" the same id after a 503 or no answer.\n\n"
        f"{happened.describe()} (Planned: {outage:.0f} s.)\n\n"
        f"Stall after each kill, in the 30 s after it (results: the longest gap between"
        f" results; PROJECTED: between PROJECTED answers at the gateway): results max"
        f" {max(results):.2f} s, median {median(results):.2f} s; PROJECTED max"
        f" {max(projected):.2f} s, median {median(projected):.2f} s.\n\n"
        f"| kill | what | inside | results stall | PROJECTED stall |\n|---|---|---|---|---|\n"
        f"{lines}\n",
        test_scale,
    )
