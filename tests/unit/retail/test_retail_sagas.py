"""Given / When / Expect for the retail sagas: replenishment and purchase_flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from topologies.retail.domain import (
    AdjustmentReason,
    AdjustStock,
    CancelPurchaseOrder,
    ClosePurchase,
    DeliveryConfirmed,
    InvoiceChanged,
    IssueInvoice,
    PurchaseOrderCancelled,
    PurchasePlaced,
    RaisePurchaseOrder,
    ReceiveSupply,
    ReorderPurchaseOrder,
    ShipPurchase,
    StockBelowReorderPoint,
    VoidInvoice,
)
from topologies.retail.sagas import PurchaseFlow, Replenishment, purchase, replenishment

from streamfold.testing import given, outcome_of

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
LEAD_TIME = timedelta(hours=2)
PO_ID = "s1/apple/r-1"  # store, item and the sale that took the stock below its point


# --- replenishment ----------------------------------------------------------------------


def stock_low(sale_id: str = "r-1", on_hand: int = 4) -> StockBelowReorderPoint:
    return StockBelowReorderPoint(
        store_id="s1",
        item_id="apple",
        supplier_id="acme",
        reorder_point=5,
        reorder_quantity=20,
        lead_time_seconds=int(LEAD_TIME.total_seconds()),
        sale_id=sale_id,
        on_hand=on_hand,
    )


def ordered(reordered: bool = False) -> Replenishment:
    return Replenishment(
        po_id=PO_ID,
        store_id="s1",
        item_id="apple",
        supplier_id="acme",
        quantity=20,
        lead_time_seconds=int(LEAD_TIME.total_seconds()),
        reordered=reordered,
    )


def delivered(po_id: str = PO_ID) -> DeliveryConfirmed:
    return DeliveryConfirmed(
        po_id=po_id, store_id="s1", item_id="apple", supplier_id="acme", quantity=20
    )


def test_stock_below_its_reorder_point_raises_an_order_and_waits_its_lead_time() -> None:
    given(replenishment, at=AT).when(stock_low()).expect_commands(
        RaisePurchaseOrder(
            po_id=PO_ID, store_id="s1", item_id="apple", supplier_id="acme", quantity=20
        )
    ).expect_state(ordered()).expect_timer("delivery_due", at=AT + LEAD_TIME).expect_ended(False)


def test_one_replenishment_runs_per_purchase_order() -> None:
    assert replenishment.correlate(stock_low()) == PO_ID
    assert replenishment.correlate(delivered()) == PO_ID
    assert replenishment.correlate(PurchaseOrderCancelled(po_id=PO_ID, reason="late")) == PO_ID
    # Another sale's crossing is another order, another instance: this one is untouched.
    again = given(replenishment, stock_low(), at=AT).when(stock_low(sale_id="r-2", on_hand=1))
    again.expect_ignored().expect_state(ordered()).expect_timer("delivery_due", at=AT + LEAD_TIME)


def test_a_confirmed_delivery_is_received_into_the_stock_and_ends_it() -> None:
    given(replenishment, stock_low()).when(delivered()).expect_commands(
        ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=20)
    ).expect_state(None).expect_ended().expect_no_timer("delivery_due")


def test_a_delivery_in_time_sets_off_no_reorder() -> None:
    received = given(replenishment, stock_low(), at=AT).when(delivered()).then()
    received.when_time_passes(LEAD_TIME * 3).expect_ignored().expect_commands()


def test_nothing_happens_before_the_lead_time_is_up() -> None:
    given(replenishment, stock_low(), at=AT).when_time_passes(
        LEAD_TIME - timedelta(seconds=1)
    ).expect_ignored().expect_commands().expect_state(ordered()).expect_timer("delivery_due")


def test_a_late_delivery_is_reordered_once_and_waited_for_again() -> None:
    given(replenishment, stock_low(), at=AT).when_time_passes(LEAD_TIME).expect_commands(
        ReorderPurchaseOrder(po_id=PO_ID)
    ).expect_state(ordered(reordered=True)).expect_timer(
        "delivery_due", at=AT + 2 * LEAD_TIME
    ).expect_ended(False)


def test_a_delivery_after_the_reorder_is_still_received() -> None:
    reordered = given(replenishment, stock_low(), at=AT).when_time_passes(LEAD_TIME).then()
    reordered.when(delivered()).expect_commands(
        ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=20)
    ).expect_ended()


def test_late_again_the_order_is_cancelled_and_it_ends_when_the_order_is() -> None:
    reordered = given(replenishment, stock_low(), at=AT).when_time_passes(LEAD_TIME).then()
    cancelling = (
        reordered.when_time_passes(LEAD_TIME)
        .expect_commands(CancelPurchaseOrder(po_id=PO_ID, reason="late"))
        .expect_state(ordered(reordered=True))
        .expect_ended(False)
        .expect_no_timer("delivery_due")
    )
    cancelling.then().when(
        PurchaseOrderCancelled(po_id=PO_ID, reason="late")
    ).expect_commands().expect_state(None).expect_ended()


def test_both_deadlines_pass_in_one_stretch_of_time() -> None:
    given(replenishment, stock_low(), at=AT).when_time_passes(LEAD_TIME * 5).expect_commands(
        ReorderPurchaseOrder(po_id=PO_ID), CancelPurchaseOrder(po_id=PO_ID, reason="late")
    ).expect_ended(False).expect_no_timer("delivery_due")


def test_each_crossing_of_the_reorder_point_is_an_order_of_its_own() -> None:
    assert replenishment.correlate(stock_low(sale_id="r-9")) == "s1/apple/r-9"
    given(replenishment).when(stock_low(sale_id="r-9")).expect_commands(
        RaisePurchaseOrder(
            po_id="s1/apple/r-9", store_id="s1", item_id="apple", supplier_id="acme", quantity=20
        )
    ).expect_state(ordered().model_copy(update={"po_id": "s1/apple/r-9"}))


def test_a_delivery_without_a_replenishment_is_ignored() -> None:
    given(replenishment, saga_id=PO_ID).when(delivered()).expect_ignored().expect_commands()


def test_a_delivery_of_another_purchase_order_does_not_end_the_replenishment() -> None:
    given(replenishment, stock_low(), at=AT).when(
        delivered(po_id="po-by-hand")
    ).expect_ignored().expect_state(ordered()).expect_timer("delivery_due", at=AT + LEAD_TIME)


def test_a_delivery_confirmed_while_the_cancel_was_on_its_way_is_still_received() -> None:
    cancelling = given(replenishment, stock_low(), at=AT).when_time_passes(2 * LEAD_TIME).then()
    cancel = CancelPurchaseOrder(po_id=PO_ID, reason="late")
    too_late = cancelling.when(outcome_of(cancel, "rejected", "not_open")).then()
    too_late.when(delivered()).expect_commands(
        ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=20)
    )


# --- purchase_flow ------------------------------------------------------------------------

PLACED = PurchasePlaced(
    purchase_id="p-1",
    customer_id="c-1",
    store_id="s1",
    item_id="apple",
    quantity=2,
    amount=Decimal("0.80"),
)
SHIP = ShipPurchase(store_id="s1", item_id="apple", purchase_id="p-1", quantity=2)
COMPLETE = ClosePurchase(purchase_id="p-1")
CANCEL = ClosePurchase(purchase_id="p-1", reason="payment_failed")
TAKE_BACK = AdjustStock(
    store_id="s1",
    item_id="apple",
    delta=2,
    reason=AdjustmentReason.customer_return,
    note="purchase p-1 cancelled",
)


def flow(*, shipped: bool = False, paid: bool = False, cancelled: bool = False) -> PurchaseFlow:
    return PurchaseFlow(
        purchase_id="p-1",
        store_id="s1",
        item_id="apple",
        quantity=2,
        shipped=shipped,
        paid=paid,
        cancelled=cancelled,
    )


def invoice(status: str) -> InvoiceChanged:
    return InvoiceChanged(purchase_id="p-1", status=status, amount=Decimal("0.80"))


SHIPPED = outcome_of(SHIP, "accepted")
NOT_SHIPPED = outcome_of(SHIP, "rejected", "insufficient_stock")


def test_a_placed_purchase_is_invoiced_and_shipped() -> None:
    assert purchase.correlate(PLACED) == "p-1"
    given(purchase).when(PLACED).expect_commands(
        IssueInvoice(purchase_id="p-1", amount=Decimal("0.80")), SHIP
    ).expect_state(flow()).expect_ended(False)


def test_an_issued_invoice_changes_nothing() -> None:
    given(purchase, PLACED).when(invoice("issued")).expect_commands().expect_state(flow())


def test_shipped_then_paid_completes_the_purchase() -> None:
    shipped = (
        given(purchase, PLACED).when(SHIPPED).expect_commands().expect_state(flow(shipped=True))
    )
    shipped.then().when(invoice("paid")).expect_commands(COMPLETE).expect_ended()


def test_paid_then_shipped_completes_the_purchase() -> None:
    paid = (
        given(purchase, PLACED)
        .when(invoice("paid"))
        .expect_commands()
        .expect_state(flow(paid=True))
    )
    paid.then().when(SHIPPED).expect_commands(COMPLETE).expect_ended()


def test_a_failed_payment_before_the_shipment_is_known_cancels_and_waits_for_it() -> None:
    given(purchase, PLACED).when(invoice("payment_failed")).expect_commands(CANCEL).expect_state(
        flow(cancelled=True)
    ).expect_ended(False)


def test_stock_shipped_after_a_failed_payment_is_taken_back() -> None:
    given(purchase, PLACED, invoice("payment_failed")).when(SHIPPED).expect_commands(
        TAKE_BACK
    ).expect_ended()


def test_a_rejected_shipment_after_a_failed_payment_just_ends_it() -> None:
    given(purchase, PLACED, invoice("payment_failed")).when(
        NOT_SHIPPED
    ).expect_commands().expect_ended()


def test_a_failed_payment_after_the_shipment_cancels_and_takes_the_stock_back() -> None:
    given(purchase, PLACED, SHIPPED).when(invoice("payment_failed")).expect_commands(
        CANCEL, TAKE_BACK
    ).expect_ended()


def test_a_shipment_the_store_rejects_voids_the_invoice_and_cancels_the_purchase() -> None:
    given(purchase, PLACED).when(NOT_SHIPPED).expect_commands(
        VoidInvoice(purchase_id="p-1", reason="not_shipped"),
        ClosePurchase(purchase_id="p-1", reason="not shipped: insufficient_stock"),
    ).expect_ended()


def test_a_rejected_shipment_of_a_paid_purchase_voids_it_too() -> None:
    given(purchase, PLACED, invoice("paid")).when(
        outcome_of(SHIP, "invalid", "invalid_command")
    ).expect_commands(
        VoidInvoice(purchase_id="p-1", reason="not_shipped"),
        ClosePurchase(purchase_id="p-1", reason="not shipped: invalid_command"),
    ).expect_ended()


def test_the_voided_invoice_of_a_running_purchase_changes_nothing() -> None:
    given(purchase, PLACED, SHIPPED).when(invoice("voided")).expect_commands().expect_state(
        flow(shipped=True)
    )


def test_the_voided_invoice_after_the_end_is_ignored() -> None:
    given(purchase, PLACED, NOT_SHIPPED).when(invoice("voided")).expect_ignored()


def test_a_shipment_outcome_without_a_purchase_is_ignored() -> None:
    given(purchase, saga_id="p-9").when(SHIPPED).expect_ignored().expect_commands()


def test_the_outcome_of_a_command_it_does_not_watch_is_ignored() -> None:
    issued = IssueInvoice(purchase_id="p-1", amount=Decimal("0.80"))
    rejected = given(purchase, PLACED).when(outcome_of(issued, "rejected", "already_exists"))
    rejected.expect_ignored().expect_state(flow())
