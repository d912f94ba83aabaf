"""Given / When / Expect for the retail domain: every decision and every fold."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from topologies.retail.domain import (
    AddItem,
    AdjustmentReason,
    AdjustStock,
    ChangePrice,
    Item,
    ItemAdded,
    PriceChanged,
    ReceiveSupply,
    RecordSale,
    RegisterSupplier,
    SaleRecorded,
    StockAdjusted,
    StoreStock,
    Supplier,
    SupplierRegistered,
    SupplyReceived,
    items,
    retail,
    stock,
    suppliers,
)

from streamfold.domain import Metadata
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
    soft = items.soft_delete
    assert soft is not None
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


def test_the_context_names_its_topics() -> None:
    assert stock.topics.commands == "retail.store_stock.commands"
    assert retail.topics.dlq == "retail.dlq"
    assert retail.aggregate_for(RecordSale) is stock
    assert stock.aggregate_id(sale(1)) == "s1/apple"
