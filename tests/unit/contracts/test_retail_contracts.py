"""Every retail message type goes through the wire format and back unchanged."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pydantic import BaseModel
from topologies.retail import domain as r
from topologies.retail import sagas

from streamfold.contracts import AvroCodec, InMemorySchemaRegistry

pytestmark = pytest.mark.unit

AT = dt.datetime(2026, 3, 1, 9, 30, 0, 250_000, tzinfo=dt.UTC)
PRICE = Decimal("2.49")
SOFT = r.items.soft_delete
assert SOFT is not None
POLICY = {
    "store_id": "s1",
    "item_id": "apple",
    "supplier_id": "acme",
    "reorder_point": 5,
    "reorder_quantity": 20,
    "lead_time_seconds": 7200,
}
TERMS = {
    "po_id": "po-1",
    "store_id": "s1",
    "item_id": "apple",
    "supplier_id": "acme",
    "quantity": 20,
}
PURCHASE = {
    "purchase_id": "p-1",
    "customer_id": "c-1",
    "store_id": "s1",
    "item_id": "apple",
    "quantity": 2,
    "amount": Decimal("4.98"),
}

SAMPLES: list[BaseModel] = [
    r.RegisterSupplier(supplier_id="acme", name="ACME"),
    r.SupplierRegistered(supplier_id="acme", name="ACME"),
    r.Supplier(supplier_id="acme", name="ACME"),
    r.AddItem(item_id="apple", name="Apple", price=PRICE),
    r.ChangePrice(item_id="apple", price=PRICE),
    r.ItemAdded(item_id="apple", name="Apple", price=PRICE),
    r.PriceChanged(item_id="apple", old_price=PRICE, new_price=Decimal("2.59")),
    r.Item(item_id="apple", name="Apple", price=PRICE),
    SOFT.delete(aggregate_id="apple", reason="season over"),
    SOFT.deleted(aggregate_id="apple"),
    SOFT.recover(aggregate_id="apple"),
    SOFT.recovered(aggregate_id="apple", reason="back"),
    r.ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=10),
    r.RecordSale(store_id="s1", item_id="apple", sale_id="x", quantity=2, unit_price=PRICE),
    r.AdjustStock(store_id="s1", item_id="apple", delta=-1, reason=r.AdjustmentReason.damaged),
    r.SupplyReceived(
        store_id="s1", item_id="apple", supplier_id="acme", quantity=10, received_at=AT
    ),
    r.SaleRecorded(
        store_id="s1",
        item_id="apple",
        sale_id="x",
        quantity=2,
        unit_price=PRICE,
        amount=Decimal("4.98"),
        sold_at=AT,
    ),
    r.StockAdjusted(
        store_id="s1",
        item_id="apple",
        delta=-1,
        reason=r.AdjustmentReason.shrinkage,
        note="count",
        adjusted_by="clerk-7",
    ),
    r.StoreStock(store_id="s1", item_id="apple", on_hand=8, sold_amount=Decimal("4.98")),
    r.SetReorderPolicy(**POLICY),
    r.ReorderPolicySet(**POLICY),
    r.StockBelowReorderPoint(**POLICY, sale_id="x", on_hand=3),
    r.ShipPurchase(store_id="s1", item_id="apple", purchase_id="p-1", quantity=2),
    r.PurchaseShipped(store_id="s1", item_id="apple", purchase_id="p-1", quantity=2),
    r.StoreStock(
        store_id="s1",
        item_id="apple",
        on_hand=3,
        sold_amount=Decimal("4.98"),
        supplier_id="acme",
        reorder_point=5,
        reorder_quantity=20,
        lead_time_seconds=7200,
    ),
    r.RaisePurchaseOrder(**TERMS),
    r.ConfirmDelivery(po_id="po-1"),
    r.ReorderPurchaseOrder(po_id="po-1"),
    r.CancelPurchaseOrder(po_id="po-1", reason="late"),
    r.PurchaseOrderRaised(**TERMS),
    r.DeliveryConfirmed(**TERMS),
    r.PurchaseOrderReordered(po_id="po-1"),
    r.PurchaseOrderCancelled(po_id="po-1", reason="late"),
    r.PurchaseOrder(**TERMS, status="cancelled", reorders=1),
    r.PlacePurchase(**PURCHASE),
    r.ClosePurchase(purchase_id="p-1", reason="payment_failed"),
    r.PurchasePlaced(**PURCHASE),
    r.PurchaseClosed(purchase_id="p-1", customer_id="c-1", reason="payment_failed"),
    r.Purchase(**PURCHASE, status="cancelled", reason="payment_failed"),
    r.IssueInvoice(purchase_id="p-1", amount=Decimal("4.98")),
    r.RecordPayment(purchase_id="p-1", succeeded=True),
    r.VoidInvoice(purchase_id="p-1", reason="not_shipped"),
    r.InvoiceChanged(purchase_id="p-1", status="paid", amount=Decimal("4.98")),
    r.Invoice(purchase_id="p-1", status="voided", amount=Decimal("4.98")),
    sagas.Replenishment(**TERMS, lead_time_seconds=7200, reordered=True),
    sagas.PurchaseFlow(
        purchase_id="p-1",
        store_id="s1",
        item_id="apple",
        quantity=2,
        shipped=True,
        paid=False,
        cancelled=True,
    ),
]


def test_samples_cover_every_retail_message_type() -> None:
    types = {*r.retail.commands(), *r.retail.events(), *r.retail.states()}
    assert {type(m) for m in SAMPLES} == types


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_retail_message_round_trips(message: BaseModel) -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    model = type(message)
    data = codec.writer("retail.any.events", model, r.retail.namespace).encode(message)
    assert codec.reader(model, namespace=r.retail.namespace).decode(data) == message
