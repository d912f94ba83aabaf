"""Given / When / Expect for the retail domain: every decision and every fold."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from topologies.retail.domain import (
    AddItem,
    AdjustmentReason,
    AdjustStock,
    CancelPurchaseOrder,
    ChangePrice,
    ClosePurchase,
    ConfirmDelivery,
    DeliveryConfirmed,
    Invoice,
    InvoiceChanged,
    IssueInvoice,
    Item,
    ItemAdded,
    PlacePurchase,
    PriceChanged,
    Purchase,
    PurchaseClosed,
    PurchaseOrder,
    PurchaseOrderCancelled,
    PurchaseOrderRaised,
    PurchaseOrderReordered,
    PurchasePlaced,
    PurchaseShipped,
    RaisePurchaseOrder,
    ReceiveSupply,
    RecordPayment,
    RecordSale,
    RegisterSupplier,
    ReorderPolicySet,
    ReorderPurchaseOrder,
    SaleRecorded,
    SetReorderPolicy,
    ShipPurchase,
    StockAdjusted,
    StockBelowReorderPoint,
    StoreStock,
    Supplier,
    SupplierRegistered,
    SupplyReceived,
    VoidInvoice,
    invoices,
    items,
    orders,
    purchases,
    retail,
    stock,
    suppliers,
)

from streamfold.domain import Command, Event, Metadata
from streamfold.testing import given

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
META = Metadata(issued_at=AT, principal="clerk-7")


def supplied(quantity: int, supplier: str = "acme") -> SupplyReceived:
    return SupplyReceived(
        store_id="s1", item_id="apple", supplier_id=supplier, quantity=quantity, received_at=AT
    )


def sale(quantity: int, sale_id: str = "r-1") -> RecordSale:
    return RecordSale(
        store_id="s1",
        item_id="apple",
        sale_id=sale_id,
        quantity=quantity,
        unit_price=Decimal("0.40"),
    )


# --- supplier ---------------------------------------------------------------------------


def test_register_supplier() -> None:
    given(suppliers).when(RegisterSupplier(supplier_id="acme", name="ACME")).expect_events(
        SupplierRegistered(supplier_id="acme", name="ACME")
    ).expect_state(Supplier(supplier_id="acme", name="ACME")).expect_version(1)


def test_register_supplier_twice_is_rejected() -> None:
    given(suppliers, SupplierRegistered(supplier_id="acme", name="ACME")).when(
        RegisterSupplier(supplier_id="acme", name="Other")
    ).expect_rejected("already_exists", "acme")


# --- item -------------------------------------------------------------------------------


APPLE = ItemAdded(item_id="apple", name="Apple", price=Decimal("0.40"))


def test_add_item() -> None:
    given(items).when(AddItem(item_id="apple", name="Apple", price=Decimal("0.40"))).expect_events(
        APPLE
    ).expect_state(Item(item_id="apple", name="Apple", price=Decimal("0.40")))


def test_add_item_twice_is_rejected() -> None:
    given(items, APPLE).when(
        AddItem(item_id="apple", name="Apple", price=Decimal("0.50"))
    ).expect_rejected("already_exists")


def test_change_price() -> None:
    given(items, APPLE).when(ChangePrice(item_id="apple", price=Decimal("0.45"))).expect_events(
        PriceChanged(item_id="apple", old_price=Decimal("0.40"), new_price=Decimal("0.45"))
    ).expect_state(Item(item_id="apple", name="Apple", price=Decimal("0.45"))).expect_version(2)


def test_change_to_the_same_price_decides_nothing() -> None:
    given(items, APPLE).when(
        ChangePrice(item_id="apple", price=Decimal("0.40"))
    ).expect_events().expect_version(1)


def test_change_price_of_unknown_item_is_rejected() -> None:
    given(items).when(ChangePrice(item_id="pear", price=Decimal("1"))).expect_rejected(
        "not_found", "item 'pear'"
    )


def test_discontinued_item_refuses_price_changes_until_recovered() -> None:
    soft = items.deletion
    deleted = soft.deleted(aggregate_id="apple", reason="season over")
    given(items, APPLE).when(soft.delete(aggregate_id="apple", reason="season over")).expect_events(
        deleted
    ).expect_deleted()
    given(items, APPLE, deleted).when(
        ChangePrice(item_id="apple", price=Decimal("0.45"))
    ).expect_rejected("aggregate_deleted")
    given(items, APPLE, deleted).when(soft.recover(aggregate_id="apple")).expect_events(
        soft.recovered(aggregate_id="apple")
    ).expect_deleted(False).expect_version(3)


# --- store stock ------------------------------------------------------------------------


def test_first_supply_creates_the_stock() -> None:
    given(stock).when(
        ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=10), META
    ).expect_events(supplied(10)).expect_state(
        StoreStock(store_id="s1", item_id="apple", on_hand=10)
    )


def test_later_supplies_add_up_and_keep_their_supplier() -> None:
    outcome = given(stock, supplied(10)).when(
        ReceiveSupply(store_id="s1", item_id="apple", supplier_id="fresh", quantity=5), META
    )
    outcome.expect_events(supplied(5, supplier="fresh")).expect_state(
        StoreStock(store_id="s1", item_id="apple", on_hand=15)
    )


def test_sale_reduces_stock_and_has_an_amount() -> None:
    given(stock, supplied(10)).when(sale(3), META).expect_events(
        SaleRecorded(
            store_id="s1",
            item_id="apple",
            sale_id="r-1",
            quantity=3,
            unit_price=Decimal("0.40"),
            amount=Decimal("1.20"),
            sold_at=AT,
        )
    ).expect_state(
        StoreStock(store_id="s1", item_id="apple", on_hand=7, sold_amount=Decimal("1.20"))
    )


def test_sale_of_the_whole_stock_is_accepted() -> None:
    given(stock, supplied(3)).when(sale(3), META).expect_state(
        StoreStock(store_id="s1", item_id="apple", on_hand=0, sold_amount=Decimal("1.20"))
    )


def test_sale_beyond_stock_is_rejected_with_a_reason() -> None:
    given(stock, supplied(2)).when(sale(3)).expect_rejected(
        "insufficient_stock", "cannot sell 3 of item apple in store s1: 2 on hand"
    )


def test_sale_in_a_store_that_never_had_the_item_is_rejected() -> None:
    given(stock).when(sale(1)).expect_rejected("not_found", "store_stock 's1/apple'")


def test_adjustment_is_audited() -> None:
    adjust = AdjustStock(
        store_id="s1", item_id="apple", delta=-2, reason=AdjustmentReason.damaged, note="dropped"
    )
    given(stock, supplied(5)).when(adjust, META).expect_events(
        StockAdjusted(
            store_id="s1",
            item_id="apple",
            delta=-2,
            reason=AdjustmentReason.damaged,
            note="dropped",
            adjusted_by="clerk-7",
        )
    ).expect_state(StoreStock(store_id="s1", item_id="apple", on_hand=3))


def test_adjustment_below_zero_is_rejected() -> None:
    adjust = AdjustStock(
        store_id="s1", item_id="apple", delta=-6, reason=AdjustmentReason.shrinkage
    )
    given(stock, supplied(5)).when(adjust).expect_rejected("negative_stock", "-1 on hand")


def test_stale_expected_version_is_rejected() -> None:
    given(stock, supplied(5), supplied(5)).when(
        sale(1), Metadata(expected_version=1)
    ).expect_rejected("version_conflict", "at version 2")


# --- store stock: the reorder policy and shipments ------------------------------------

POLICY = {
    "store_id": "s1",
    "item_id": "apple",
    "supplier_id": "acme",
    "reorder_point": 5,
    "reorder_quantity": 20,
    "lead_time_seconds": 7200,
}


def policy_set() -> ReorderPolicySet:
    return ReorderPolicySet(**POLICY)


def stock_with_policy(on_hand: int, sold: str = "0.00") -> StoreStock:
    """The stock under ``POLICY``."""
    return StoreStock(
        store_id="s1",
        item_id="apple",
        on_hand=on_hand,
        sold_amount=Decimal(sold),
        supplier_id="acme",
        reorder_point=5,
        reorder_quantity=20,
        lead_time_seconds=7200,
    )


def sold(quantity: int, sale_id: str = "r-1") -> SaleRecorded:
    return SaleRecorded(
        store_id="s1",
        item_id="apple",
        sale_id=sale_id,
        quantity=quantity,
        unit_price=Decimal("0.40"),
        amount=Decimal("0.40") * quantity,
        sold_at=AT,
    )


def ship(quantity: int) -> ShipPurchase:
    return ShipPurchase(store_id="s1", item_id="apple", purchase_id="p-1", quantity=quantity)


def test_setting_a_reorder_policy_keeps_it_on_the_stock() -> None:
    given(stock, supplied(10)).when(SetReorderPolicy(**POLICY)).expect_events(
        policy_set()
    ).expect_state(stock_with_policy(10)).expect_version(2)


def test_a_reorder_policy_needs_the_stock_to_exist() -> None:
    given(stock).when(SetReorderPolicy(**POLICY)).expect_rejected("not_found", "'s1/apple'")


def test_a_sale_that_takes_the_stock_below_the_reorder_point_says_so() -> None:
    given(stock, supplied(6), policy_set()).when(sale(2), META).expect_events(
        sold(2), StockBelowReorderPoint(**POLICY, sale_id="r-1", on_hand=4)
    ).expect_state(stock_with_policy(4, sold="0.80")).expect_version(4)


def test_a_sale_from_exactly_the_reorder_point_crosses_it() -> None:
    given(stock, supplied(5), policy_set()).when(sale(1), META).expect_events(
        sold(1), StockBelowReorderPoint(**POLICY, sale_id="r-1", on_hand=4)
    )


def test_a_sale_that_leaves_the_reorder_point_on_hand_is_only_a_sale() -> None:
    given(stock, supplied(7), policy_set()).when(sale(2), META).expect_events(sold(2)).expect_state(
        stock_with_policy(5, sold="0.80")
    )


def test_a_sale_already_below_the_reorder_point_does_not_say_so_again() -> None:
    given(stock, supplied(6), policy_set(), sold(2)).when(
        sale(1, sale_id="r-2"), META
    ).expect_events(sold(1, sale_id="r-2"))


def test_without_a_reorder_policy_a_sale_to_zero_is_only_a_sale() -> None:
    given(stock, supplied(1)).when(sale(1), META).expect_events(sold(1))


def test_shipping_a_purchase_takes_it_from_the_stock() -> None:
    given(stock, supplied(10)).when(ship(4), META).expect_events(
        PurchaseShipped(store_id="s1", item_id="apple", purchase_id="p-1", quantity=4)
    ).expect_state(StoreStock(store_id="s1", item_id="apple", on_hand=6))


def test_shipping_below_the_reorder_point_is_only_a_shipment() -> None:
    given(stock, supplied(6), policy_set()).when(ship(4), META).expect_events(
        PurchaseShipped(store_id="s1", item_id="apple", purchase_id="p-1", quantity=4)
    ).expect_state(stock_with_policy(2))


def test_shipping_more_than_is_on_hand_is_rejected() -> None:
    given(stock, supplied(2)).when(ship(3)).expect_rejected(
        "insufficient_stock", "3 of item apple in store s1: 2 on hand"
    )


# --- purchase order -------------------------------------------------------------------

TERMS = {
    "po_id": "po-1",
    "store_id": "s1",
    "item_id": "apple",
    "supplier_id": "acme",
    "quantity": 20,
}
RAISED = PurchaseOrderRaised(**TERMS)


def test_raising_a_purchase_order_opens_it() -> None:
    given(orders).when(RaisePurchaseOrder(**TERMS)).expect_events(RAISED).expect_state(
        PurchaseOrder(**TERMS)
    )


def test_raising_a_purchase_order_twice_is_rejected() -> None:
    given(orders, RAISED).when(RaisePurchaseOrder(**TERMS)).expect_rejected(
        "already_exists", "po-1"
    )


def test_confirming_the_delivery_repeats_the_terms_and_closes_the_order() -> None:
    given(orders, RAISED).when(ConfirmDelivery(po_id="po-1")).expect_events(
        DeliveryConfirmed(**TERMS)
    ).expect_state(PurchaseOrder(**TERMS, status="delivered"))


def test_each_reorder_is_counted_and_the_order_stays_open() -> None:
    reordered = PurchaseOrderReordered(po_id="po-1")
    given(orders, RAISED, reordered).when(ReorderPurchaseOrder(po_id="po-1")).expect_events(
        reordered
    ).expect_state(PurchaseOrder(**TERMS, reorders=2))


def test_cancelling_an_order_keeps_its_reason() -> None:
    given(orders, RAISED).when(CancelPurchaseOrder(po_id="po-1", reason="late")).expect_events(
        PurchaseOrderCancelled(po_id="po-1", reason="late")
    ).expect_state(PurchaseOrder(**TERMS, status="cancelled"))


@pytest.mark.parametrize(
    "change",
    [
        ConfirmDelivery(po_id="po-1"),
        ReorderPurchaseOrder(po_id="po-1"),
        CancelPurchaseOrder(po_id="po-1", reason="late"),
    ],
    ids=lambda c: type(c).__name__,
)
@pytest.mark.parametrize(
    ("done", "status"),
    [
        (DeliveryConfirmed(**TERMS), "delivered"),
        (PurchaseOrderCancelled(po_id="po-1", reason="late"), "cancelled"),
    ],
    ids=["delivered", "cancelled"],
)
def test_a_closed_order_cannot_change(change: Command, done: Event, status: str) -> None:
    given(orders, RAISED, done).when(change).expect_rejected(
        "not_open", f"purchase order po-1 is {status}"
    )


def test_an_unknown_order_cannot_change() -> None:
    given(orders).when(ConfirmDelivery(po_id="po-9")).expect_rejected("not_found")


# --- purchase -------------------------------------------------------------------------

PURCHASE = {
    "purchase_id": "p-1",
    "customer_id": "c-1",
    "store_id": "s1",
    "item_id": "apple",
    "quantity": 2,
    "amount": Decimal("0.80"),
}
PLACED = PurchasePlaced(**PURCHASE)


def test_placing_a_purchase() -> None:
    given(purchases).when(PlacePurchase(**PURCHASE)).expect_events(PLACED).expect_state(
        Purchase(**PURCHASE)
    )


def test_placing_a_purchase_twice_is_rejected() -> None:
    given(purchases, PLACED).when(PlacePurchase(**PURCHASE)).expect_rejected(
        "already_exists", "p-1"
    )


def test_closing_a_purchase_without_a_reason_completes_it() -> None:
    given(purchases, PLACED).when(ClosePurchase(purchase_id="p-1")).expect_events(
        PurchaseClosed(purchase_id="p-1", customer_id="c-1")
    ).expect_state(Purchase(**PURCHASE, status="completed"))


def test_closing_a_purchase_with_a_reason_cancels_it() -> None:
    close = ClosePurchase(purchase_id="p-1", reason="payment_failed")
    given(purchases, PLACED).when(close).expect_events(
        PurchaseClosed(purchase_id="p-1", customer_id="c-1", reason="payment_failed")
    ).expect_state(Purchase(**PURCHASE, status="cancelled", reason="payment_failed"))


def test_a_closed_purchase_cannot_be_closed_again() -> None:
    closed = PurchaseClosed(purchase_id="p-1", customer_id="c-1")
    given(purchases, PLACED, closed).when(
        ClosePurchase(purchase_id="p-1", reason="late")
    ).expect_rejected("closed", "purchase p-1 is completed")


# --- invoice --------------------------------------------------------------------------


def invoice_is(status: str) -> InvoiceChanged:
    return InvoiceChanged(purchase_id="p-1", status=status, amount=Decimal("0.80"))


def test_issuing_an_invoice() -> None:
    given(invoices).when(IssueInvoice(purchase_id="p-1", amount=Decimal("0.80"))).expect_events(
        invoice_is("issued")
    ).expect_state(Invoice(purchase_id="p-1", status="issued", amount=Decimal("0.80")))


def test_issuing_an_invoice_twice_is_rejected() -> None:
    given(invoices, invoice_is("issued")).when(
        IssueInvoice(purchase_id="p-1", amount=Decimal("1.00"))
    ).expect_rejected("already_exists", "invoice p-1")


@pytest.mark.parametrize(("succeeded", "status"), [(True, "paid"), (False, "payment_failed")])
def test_a_payment_pays_the_issued_invoice_or_fails_it(succeeded: bool, status: str) -> None:
    given(invoices, invoice_is("issued")).when(
        RecordPayment(purchase_id="p-1", succeeded=succeeded)
    ).expect_events(invoice_is(status)).expect_state(
        Invoice(purchase_id="p-1", status=status, amount=Decimal("0.80"))
    ).expect_version(2)


@pytest.mark.parametrize("status", ["issued", "paid"])
def test_an_issued_or_paid_invoice_can_be_voided(status: str) -> None:
    given(invoices, invoice_is(status)).when(
        VoidInvoice(purchase_id="p-1", reason="not_shipped")
    ).expect_events(invoice_is("voided"))


@pytest.mark.parametrize("status", ["paid", "payment_failed", "voided"])
def test_only_an_issued_invoice_takes_a_payment(status: str) -> None:
    given(invoices, invoice_is(status)).when(
        RecordPayment(purchase_id="p-1", succeeded=True)
    ).expect_rejected("not_open", f"invoice p-1 is {status}")


@pytest.mark.parametrize("status", ["payment_failed", "voided"])
def test_a_failed_or_voided_invoice_cannot_be_voided(status: str) -> None:
    given(invoices, invoice_is(status)).when(
        VoidInvoice(purchase_id="p-1", reason="again")
    ).expect_rejected("not_open", f"invoice p-1 is {status}")


@pytest.mark.parametrize(
    "command",
    [RecordPayment(purchase_id="p-9", succeeded=True), VoidInvoice(purchase_id="p-9", reason="x")],
    ids=lambda c: type(c).__name__,
)
def test_an_invoice_that_was_never_issued_cannot_change(command: Command) -> None:
    given(invoices).when(command).expect_rejected("not_found")


def test_the_context_names_its_topics() -> None:
    assert stock.topics.commands == "retail.store_stock.commands"
    assert retail.topics.dlq == "retail.dlq"
    assert retail.aggregate_for(RecordSale) is stock
    assert stock.aggregate_id(sale(1)) == "s1/apple"
    assert retail.aggregate_for(ShipPurchase) is stock
    assert orders.topics.commands == "retail.purchase_order.commands"
    assert invoices.aggregate_id(IssueInvoice(purchase_id="p-1", amount=Decimal("1"))) == "p-1"
