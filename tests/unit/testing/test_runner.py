"""The in-process runner: a whole bounded context (aggregates, sagas, middleware) on
in-memory stores and a fake clock, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from topologies.retail import domain as d
from topologies.retail.sagas import purchase, replenishment

from streamfold.domain import Metadata
from streamfold.domain.saga import OutcomeKind
from streamfold.testing.runner import InProcess

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def stocked(app: InProcess, on_hand: int = 10) -> None:
    app.send(d.ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=on_hand))


def placed(purchase_id: str = "p-1", quantity: int = 2) -> d.PlacePurchase:
    return d.PlacePurchase(
        purchase_id=purchase_id,
        customer_id="c-1",
        store_id="s1",
        item_id="apple",
        quantity=quantity,
        amount=Decimal("0.80"),
    )


def test_a_purchase_runs_across_aggregates_to_its_completion() -> None:
    app = InProcess(d.retail, at=AT)
    stocked(app)
    result = app.send(placed())
    assert result.outcome is OutcomeKind.ACCEPTED
    assert [type(c).__name__ for c in app.sent()] == ["IssueInvoice", "ShipPurchase"]
    stock = app.state(d.stock, "s1/apple")
    assert isinstance(stock, d.StoreStock) and stock.on_hand == 8
    app.send(d.RecordPayment(purchase_id="p-1", succeeded=True))
    closed = app.state(d.purchases, "p-1")
    assert isinstance(closed, d.Purchase) and closed.status == "completed"
    assert app.saga_state(purchase, "p-1") is None  # ended


def test_a_failed_payment_cancels_the_purchase_and_takes_the_stock_back() -> None:
    app = InProcess(d.retail, at=AT)
    stocked(app)
    app.send(placed())
    app.send(d.RecordPayment(purchase_id="p-1", succeeded=False))
    cancelled = app.state(d.purchases, "p-1")
    assert isinstance(cancelled, d.Purchase) and cancelled.reason == "payment_failed"
    stock = app.state(d.stock, "s1/apple")
    assert isinstance(stock, d.StoreStock) and stock.on_hand == 10


def test_a_shipment_the_store_rejects_voids_the_invoice_from_its_outcome() -> None:
    app = InProcess(d.retail, at=AT)
    stocked(app, on_hand=1)
    app.send(placed(quantity=2))
    ship = next(r for r in app.results if isinstance(r.command, d.ShipPurchase))
    assert (ship.outcome, ship.code) == (OutcomeKind.REJECTED, "insufficient_stock")
    invoice = app.state(d.invoices, "p-1")
    assert isinstance(invoice, d.Invoice) and invoice.status == "voided"


def test_a_late_delivery_is_reordered_then_cancelled_as_the_clock_moves() -> None:
    app = InProcess(d.retail, at=AT)
    stocked(app)
    app.send(
        d.SetReorderPolicy(
            store_id="s1",
            item_id="apple",
            supplier_id="acme",
            reorder_point=5,
            reorder_quantity=20,
            lead_time_seconds=3600,
        )
    )
    sale = d.RecordSale(
        store_id="s1", item_id="apple", sale_id="r-1", quantity=6, unit_price=Decimal("0.40")
    )
    app.send(sale, Metadata(issued_at=AT))
    po_id = "s1/apple/r-1"
    assert app.timers(replenishment, po_id) == {"delivery_due": AT + timedelta(hours=1)}
    app.advance(timedelta(minutes=59))
    assert [type(c).__name__ for c in app.sent()] == ["RaisePurchaseOrder"]
    app.advance(timedelta(hours=2))
    assert [type(c).__name__ for c in app.sent()] == [
        "RaisePurchaseOrder",
        "ReorderPurchaseOrder",
        "CancelPurchaseOrder",
    ]
    order = app.state(d.orders, po_id)
    assert isinstance(order, d.PurchaseOrder) and (order.status, order.reorders) == ("cancelled", 1)
    assert app.saga_state(replenishment, po_id) is None
    assert app.now == AT + timedelta(hours=2, minutes=59)


def test_a_repeated_command_id_gets_its_first_result_and_no_second_effect() -> None:
    app = InProcess(d.retail, at=AT)
    meta = Metadata(issued_at=AT)
    supply = d.ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=3)
    first, again = app.send(supply, meta), app.send(supply, meta)
    assert first == again
    stock = app.state(d.stock, "s1/apple")
    assert isinstance(stock, d.StoreStock) and stock.on_hand == 3


def test_another_tenant_is_refused_like_the_worker_does() -> None:
    app = InProcess(d.retail, at=AT)
    app.send(d.AddItem(item_id="apple", name="Apple", price=Decimal("0.40")), Metadata(tenant="a"))
    refused = app.send(d.ChangePrice(item_id="apple", price=Decimal("0.50")), Metadata(tenant="b"))
    assert (refused.outcome, refused.code) == (OutcomeKind.REJECTED, "tenant_mismatch")
