"""Every retail message type goes through the wire format and back unchanged."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pydantic import BaseModel
from topologies.retail import domain as r

from streamfold.contracts import AvroCodec, InMemorySchemaRegistry

pytestmark = pytest.mark.unit

AT = dt.datetime(2026, 3, 1, 9, 30, 0, 250_000, tzinfo=dt.UTC)
PRICE = Decimal("2.49")
SOFT = r.items.soft_delete
assert SOFT is not None

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
