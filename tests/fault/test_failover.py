"""A SIGKILLed worker's partitions are taken over by a survivor within seconds.

Two workers share the store-stock partitions with ``aggregates`` aggregates in state
(100,000 at full scale). The victim is SIGKILLed while it holds a transaction open (the test
hook), with commands arriving at a steady rate. The survivor must notice (the session
timeout), fence the victim's open transaction (runtime/failover.py) instead of waiting for
the broker to abort it, restore the victim's stores (or, with standby stores, only their
tail) and process the commands. Measured: from the SIGKILL to the first result, on each of
the victim's partitions, of a command sent after the kill; the figures go to
``benchmarks/reports/faults.md``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from topologies.retail.domain import ReceiveSupply

from streamfold.runtime.process import WorkerProcess
from streamfold.runtime.topology import load_topology
from streamfold.testing.pytest_plugin import scaled
from tests.fault.report import write_section
from tests.fault.watch import ResultWatcher
from tests.integration.runtime.conftest import TOPOLOGY, RetailRun, retail_run

__all__ = ["retail_run"]

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SESSION_TIMEOUT_MS = 2_000
PATIENCE = 300.0


def supplies(aggregates: int, first: int = 0, count: int | None = None) -> Iterator[ReceiveSupply]:
    """One supply per aggregate: every aggregate gets a state."""
    for n in range(first, first + (count if count is not None else aggregates)):
        k = n % aggregates
        yield ReceiveSupply(
            store_id=f"store-{k % 97}", item_id=f"item-{k}", supplier_id="s-1", quantity=1
        )


def assignment_of(run: RetailRun, worker: WorkerProcess) -> set[int]:
    """The store-stock command partitions ``worker`` owns now."""
    admin = AdminClient(run.settings.admin_config())
    group = f"{run.prefix}{load_topology(TOPOLOGY).group_id}"
    description: Any = admin.describe_consumer_groups([group])[group].result()
    owned = {
        tp.partition
        for member in description.members
        if member.client_id.endswith(f".{worker.instance_id}")
        for tp in member.assignment.topic_partitions
        if tp.topic == run.stock_topics.commands
    }
    return owned


def fail_over(
    run: RetailRun, aggregates: int, label: str, scale: float, **env: str
) -> dict[str, float]:
    """Fill, kill the victim inside a transaction, measure the takeover; return figures."""
    settings = {"STREAMFOLD_WORKER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS), **env}
    survivor = run.worker("w1", **settings)
    hold = run.directory / "hold-w2"
    victim = run.worker("w2", STREAMFOLD_WORKER_PAUSE_IN_TRANSACTION_FILE=str(hold), **settings)
    filled = {run.producer.send(c) for c in supplies(aggregates)}
    run.producer.flush()
    run.wait_until_processed(filled, PATIENCE)
    owned = assignment_of(run, victim)
    assert owned, "the victim owns no partition"
    results = ResultWatcher(run.settings, run.stock_topics.results, run.codec)
    sent: dict[str, float] = {}
    stop = threading.Event()

    def steady() -> None:  # 200 commands/s over every aggregate
        for n, command in enumerate(supplies(aggregates, aggregates, 10**9)):
            if stop.is_set():
                break
            sent[run.producer.send(command)] = time.monotonic()
            if n % 20 == 0:
                run.producer.flush()
                time.sleep(0.1)
        run.producer.flush()

    producing = threading.Thread(target=steady)
    producing.start()
    try:
        time.sleep(2.0)
        hold.touch()  # the victim's next transaction with records stays open
        deadline = time.monotonic() + 60
        while not hold.with_name("hold-w2.held").exists():
            assert time.monotonic() < deadline, "the victim never held a transaction open"
            time.sleep(0.02)
        time.sleep(0.3)  # its records reach the broker
        killed = time.monotonic()
        victim.kill()
        assert run.open_transactions() > 0, "the victim died outside a transaction"
        firsts: dict[int, float] = {}
        deadline = time.monotonic() + 120
        while set(firsts) != owned:
            assert time.monotonic() < deadline, f"partitions {owned - set(firsts)} never resumed"
            for command, at in list(sent.items()):
                if at > killed and command in results.seen:
                    partition, seen = results.seen[command]
                    if partition in owned and partition not in firsts:
                        firsts[partition] = seen - killed
            time.sleep(0.05)
    finally:
        stop.set()
        producing.join()
    run.wait_until_processed(filled | set(sent), PATIENCE, workers_must_live=False)
    results.stop()
    print(f"{label}: first results after the kill {sorted(firsts.values())}")
    log = (run.directory / "worker-w1.log").read_text(encoding="utf-8")
    assert "fenced a departed worker's transaction" in log
    assert "the previous owner's transaction is still open" not in log
    assert survivor.running()
    return {
        "worst": max(firsts.values()),
        "best": min(firsts.values()),
        "partitions": len(owned),
        "restored": restored_after_the_fence(log),
    }


def restored_after_the_fence(log: str) -> int:
    """Changelog records the survivor restored once it had fenced the victim."""
    restored, fenced = 0, False
    for line in log.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        fenced = fenced or entry.get("event") == "fenced a departed worker's transaction"
        if fenced and entry.get("event") == "store restored":
            restored += int(entry["records"])
    return restored


@pytest.mark.parametrize("standby", [False, True], ids=["no-standby", "standby"])
def test_a_survivor_takes_over_a_killed_workers_partitions(
    retail_run: RetailRun, test_scale: float, standby: bool
) -> None:
    aggregates = scaled(100_000, test_scale, 5_000)
    env = {"STREAMFOLD_WORKER_STANDBY_STORES": str(standby).lower()}
    figures = fail_over(retail_run, aggregates, f"standby={standby}", test_scale, **env)
    if standby:  # a warm standby restores only what it had not followed yet
        assert figures["restored"] < aggregates / 10, figures
    else:  # the victim's share of the state, in full
        assert figures["restored"] >= aggregates / 3, figures
    name = "standby" if standby else "no standby"
    write_section(
        f"failover-{'standby' if standby else 'no-standby'}",
        f"Worker failover ({name}): SIGKILL inside a transaction, a survivor takes over",
        f"{aggregates:,} aggregates in state, 2 workers, session timeout {SESSION_TIMEOUT_MS} ms,"
        " commands at 200/s. Measured from the SIGKILL to the first result of a command sent"
        " after it, on each of the victim's partitions.\n\n"
        "| standby stores | victim's partitions | records restored | first result, worst"
        " | best |\n|---|---|---|---|---|\n"
        f"| {'yes' if standby else 'no'} | {figures['partitions']:.0f}"
        f" | {figures['restored']:,.0f} | {figures['worst']:.2f} s | {figures['best']:.2f} s |\n",
        test_scale,
    )
