"""The retail sagas on the real broker: commands out, outcomes back, timers, crashes.

A worker of the retail topology runs the aggregates and both sagas; the tests send the
commands a store, a supplier and a payment provider would, and read what the sagas sent
from the commands topics (with their ``saga`` headers).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from topologies.retail import domain as d

from streamfold.contracts import headers as h
from streamfold.domain.naming import aggregate_topics
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.reading import read_to_end

from .conftest import FULL_TOPOLOGY, RetailRun, worker_metrics

pytestmark = [pytest.mark.integration]


def saga_commands(run: RetailRun, aggregate: str) -> list[tuple[Any, dict[str, str], int]]:
    """The commands sagas sent to ``aggregate``: (command, headers, timestamp ms)."""
    topics = aggregate_topics("retail", aggregate, run.prefix)
    reader = run.codec.reader(*run_context_commands(aggregate), namespace=d.retail.namespace)
    found = []
    for message in read_to_end(run.settings, topics.commands):
        headers = h.header_map(message.headers())
        if h.SAGA in headers:
            found.append((reader.decode(message.value() or b""), headers, message.timestamp()[1]))
    return found


def run_context_commands(aggregate: str) -> tuple[type[Any], ...]:
    return d.retail.get(aggregate).commands


def wait_for(predicate: Any, timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def stock_up(run: RetailRun, stores: int, quantity: int = 100) -> None:
    for s in range(stores):
        run.producer.send(
            d.ReceiveSupply(
                store_id=f"s{s}", item_id="apple", supplier_id="acme", quantity=quantity
            )
        )
    run.producer.flush()


def place_steadily(
    run: RetailRun, stores: int, per_second: float, at_least: int, done: threading.Event
) -> list[str]:
    """Send purchases at ``per_second`` until ``done`` is set and ``at_least`` were sent."""
    sent: list[str] = []
    while not (done.is_set() and len(sent) >= at_least):
        for _ in range(10):
            index = len(sent)
            run.producer.send(purchase(index, index % stores))
            sent.append(f"p{index}")
        run.producer.flush()
        time.sleep(10 / per_second)
    return sent


def purchase(index: int, store: int, quantity: int = 1) -> d.PlacePurchase:
    return d.PlacePurchase(
        purchase_id=f"p{index}",
        customer_id=f"c{index % 7}",
        store_id=f"s{store}",
        item_id="apple",
        quantity=quantity,
        amount=Decimal("2.50"),
    )


def test_a_purchase_is_invoiced_shipped_and_completed_or_cancelled(retail_run: RetailRun) -> None:
    retail_run.worker("w1", topology=FULL_TOPOLOGY)
    stock_up(retail_run, 1, quantity=3)
    for index in range(4):  # the fourth cannot ship: 3 on hand
        retail_run.producer.send(purchase(index, 0))
    retail_run.producer.flush()

    def issued() -> list[Any]:
        found = saga_commands(retail_run, "invoice")
        return [i for i in found if isinstance(i[0], d.IssueInvoice)]

    invoices = wait_for(lambda: len(found := issued()) >= 4 and found, 60, "four invoices")
    assert sorted(c.purchase_id for c, _, _ in invoices) == ["p0", "p1", "p2", "p3"]
    first = invoices[0][1]
    assert first[h.SAGA] == "retail.purchase_flow"
    assert first[h.PRINCIPAL] == "saga:retail.purchase_flow"
    assert first[h.CAUSATION_ID].startswith(f"{retail_run.prefix}retail.purchase.events/")

    def closed() -> dict[str, str | None]:
        return {c.purchase_id: c.reason for c, _, _ in saga_commands(retail_run, "purchase")}

    # Which purchase found the shelf empty depends on the order the saga's partitions ran.
    (unshipped,) = wait_for(closed, 60, "the purchase that could not ship")
    paid, failed, _open = sorted({"p0", "p1", "p2", "p3"} - {unshipped})
    # The payment provider answers: one paid, one failed (its stock comes back).
    retail_run.producer.send(d.RecordPayment(purchase_id=paid, succeeded=True))
    retail_run.producer.send(d.RecordPayment(purchase_id=failed, succeeded=False))
    retail_run.producer.flush()
    reasons = wait_for(lambda: len(found := closed()) >= 3 and found, 60, "three closes")
    assert reasons == {
        paid: None,
        failed: "payment_failed",
        unshipped: "not shipped: insufficient_stock",
    }
    voided = [c for c, _, _ in saga_commands(retail_run, "invoice") if isinstance(c, d.VoidInvoice)]
    assert [v.purchase_id for v in voided] == [unshipped]
    returns = [
        c for c, _, _ in saga_commands(retail_run, "store_stock") if isinstance(c, d.AdjustStock)
    ]
    assert [(r.delta, r.note) for r in returns] == [(1, f"purchase {failed} cancelled")]


def test_a_late_delivery_is_reordered_once_then_cancelled_by_timers(
    retail_run: RetailRun,
) -> None:
    worker = retail_run.worker("w1", topology=FULL_TOPOLOGY)
    stock_up(retail_run, 2, quantity=10)
    for store in range(2):
        retail_run.producer.send(
            d.SetReorderPolicy(
                store_id=f"s{store}",
                item_id="apple",
                supplier_id="acme",
                reorder_point=5,
                reorder_quantity=20,
                lead_time_seconds=3,
            )
        )
        retail_run.producer.send(
            d.RecordSale(
                store_id=f"s{store}",
                item_id="apple",
                sale_id=f"r{store}",
                quantity=6,
                unit_price=Decimal("1.00"),
            )
        )
    retail_run.producer.flush()
    raised = wait_for(
        lambda: len(found := saga_commands(retail_run, "purchase_order")) >= 2 and found,
        60,
        "two purchase orders",
    )
    # s0's order is delivered in time; s1's never is.
    retail_run.producer.send(d.ConfirmDelivery(po_id="s0/apple/r0"))
    retail_run.producer.flush()
    sent = wait_for(
        lambda: len(found := saga_commands(retail_run, "purchase_order")) >= 4 and found,
        60,
        "a reorder and a cancel",
    )
    kinds = Counter((type(c).__name__, getattr(c, "po_id", "")) for c, _, _ in sent)
    assert kinds == {
        ("RaisePurchaseOrder", "s0/apple/r0"): 1,
        ("RaisePurchaseOrder", "s1/apple/r1"): 1,
        ("ReorderPurchaseOrder", "s1/apple/r1"): 1,
        ("CancelPurchaseOrder", "s1/apple/r1"): 1,
    }
    # Never early: each timer's command went out no sooner than its due time (issued_at).
    raised_at = {c.po_id: stamp for c, _, stamp in raised}
    for command, headers, stamp in sent:
        if isinstance(command, d.ReorderPurchaseOrder | d.CancelPurchaseOrder):
            due = datetime.fromisoformat(headers[h.ISSUED_AT])
            assert stamp >= due.timestamp() * 1000
            assert due.timestamp() * 1000 >= raised_at[command.po_id] + 3000 - 1000
    supplies = [c for c, _, _ in saga_commands(retail_run, "store_stock")]
    assert supplies == [
        d.ReceiveSupply(store_id="s0", item_id="apple", supplier_id="acme", quantity=20)
    ]
    metrics = worker_metrics(worker)
    assert metrics["streamfold_worker_timers_fired_total"] == 2
    time.sleep(4)  # nothing more fires: the saga ended, its timer was deleted with it
    assert worker_metrics(worker)["streamfold_worker_timers_fired_total"] == 2


def test_purchases_under_sigkills_send_each_command_exactly_once(
    retail_run: RetailRun, test_scale: float
) -> None:
    retail_run.worker("w1", topology=FULL_TOPOLOGY)
    hold = retail_run.directory / "hold-w2"
    held = hold.with_name("hold-w2.held")
    victim = retail_run.worker(
        "w2", topology=FULL_TOPOLOGY, STREAMFOLD_WORKER_PAUSE_IN_TRANSACTION_FILE=str(hold)
    )
    stores = 12
    least = scaled(3_000, test_scale, 600)
    stock_up(retail_run, stores, quantity=100_000)
    rng = random.Random(11)
    kills = 5
    # Purchases arrive at a steady rate while the victim is killed five times, each time
    # holding a transaction open (the test hook), so each kill lands inside one.
    done = threading.Event()
    placed: list[list[str]] = []
    producing = threading.Thread(
        target=lambda: placed.append(place_steadily(retail_run, stores, 40.0, least, done))
    )
    producing.start()
    kills_inside = 0
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 2.0))
            hold.touch()  # the victim's next transaction with records stays open
            wait_for(held.exists, 60, "the victim to hold a transaction open", every=0.05)
            time.sleep(1.0)  # its records reach the broker (the pause holds the commit only)
            kills_inside += retail_run.kill_inside_a_transaction(victim)
            hold.unlink()
            held.unlink()
            victim.start(timeout=120)
    finally:
        done.set()
        producing.join()
    (everyone,) = placed
    total = len(everyone)
    failed = set(everyone[::5])
    # The payment provider answers each invoice once it exists.
    wait_for(lambda: len(saga_commands(retail_run, "invoice")) >= total, 600, f"{total} invoices")
    for index in range(total):
        retail_run.producer.send(
            d.RecordPayment(purchase_id=f"p{index}", succeeded=f"p{index}" not in failed)
        )
    retail_run.producer.flush()

    def closes() -> list[Any]:
        return [c for c, _, _ in saga_commands(retail_run, "purchase")]

    wait_for(lambda: len(closes()) >= total, 600, f"{total} closed purchases")
    invoices = Counter(
        c.purchase_id
        for c, _, _ in saga_commands(retail_run, "invoice")
        if isinstance(c, d.IssueInvoice)
    )
    ships = Counter(
        c.purchase_id
        for c, _, _ in saga_commands(retail_run, "store_stock")
        if isinstance(c, d.ShipPurchase)
    )
    assert set(invoices) == set(everyone) and set(invoices.values()) == {1}
    assert set(ships) == set(everyone) and set(ships.values()) == {1}
    closed = Counter((c.purchase_id, c.reason) for c in closes())
    assert set(closed.values()) == {1}
    cancelled = {p for (p, reason) in closed if reason == "payment_failed"}
    assert cancelled == failed
    # A kill counts when the broker still shows the victim's transaction open after it; a
    # held transaction whose records had not left the process yet is not counted.
    assert kills_inside >= 3, f"only {kills_inside} of {kills} kills inside a transaction"
    print(f"{total} purchases; {kills} SIGKILLs, {kills_inside} inside a transaction")
