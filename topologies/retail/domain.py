"""Retail: suppliers deliver items to stores (supplier-wise), each store's POS sells them.

Aggregates: ``supplier``; ``item``, the priced catalogue (discontinued = soft delete); and
``store_stock`` (id ``"{store_id}/{item_id}"``, the hot one): supplies raise it, sales lower
it but never below zero, adjustments correct it with an audited reason.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field, PositiveInt

from streamfold.domain import BoundedContext, Command, Event, Metadata, Rejected, State

retail = BoundedContext("retail", namespace="io.streamfold.retail")

Money = Annotated[Decimal, Field(max_digits=12, decimal_places=2, ge=0)]
Price = Annotated[Decimal, Field(max_digits=12, decimal_places=2, gt=0)]


# --- supplier ---------------------------------------------------------------------------
class RegisterSupplier(Command):
    supplier_id: str
    name: str


class SupplierRegistered(Event):
    supplier_id: str
    name: str


class Supplier(State):
    supplier_id: str
    name: str


suppliers = retail.aggregate("supplier", state=Supplier, id="supplier_id")


@suppliers.decides(RegisterSupplier, creates=True)
def register_supplier(state: Supplier | None, cmd: RegisterSupplier) -> SupplierRegistered:
    if state is not None:
        raise Rejected("already_exists", f"supplier {cmd.supplier_id} is already registered")
    return SupplierRegistered(supplier_id=cmd.supplier_id, name=cmd.name)


@suppliers.evolves(SupplierRegistered, creates=True)
def supplier_registered(state: Supplier | None, event: SupplierRegistered) -> Supplier:
    return Supplier(supplier_id=event.supplier_id, name=event.name)


# --- item (catalogue) -------------------------------------------------------------------
class AddItem(Command):
    item_id: str
    name: str
    price: Price


class ChangePrice(Command):
    item_id: str
    price: Price


class ItemAdded(Event):
    item_id: str
    name: str
    price: Price


class PriceChanged(Event):
    item_id: str
    old_price: Price
    new_price: Price


class Item(State):
    item_id: str
    name: str
    price: Price


items = retail.aggregate("item", state=Item, id="item_id", soft_delete=True)


@items.decides(AddItem, creates=True)
def add_item(state: Item | None, cmd: AddItem) -> ItemAdded:
    if state is not None:
        raise Rejected("already_exists", f"item {cmd.item_id} is already in the catalogue")
    return ItemAdded(item_id=cmd.item_id, name=cmd.name, price=cmd.price)


@items.decides(ChangePrice)
def change_price(state: Item, cmd: ChangePrice) -> list[PriceChanged]:
    changed = PriceChanged(item_id=cmd.item_id, old_price=state.price, new_price=cmd.price)
    return [] if cmd.price == state.price else [changed]


@items.evolves(ItemAdded, creates=True)
def item_added(state: Item | None, event: ItemAdded) -> Item:
    return Item(item_id=event.item_id, name=event.name, price=event.price)


@items.evolves(PriceChanged)
def price_changed(state: Item, event: PriceChanged) -> Item:
    return state.model_copy(update={"price": event.new_price})


# --- store stock (the hot aggregate) ----------------------------------------------------
class AdjustmentReason(StrEnum):
    """Why stock was corrected by hand; kept for the audit trail."""

    stock_count = "stock_count"
    damaged = "damaged"
    shrinkage = "shrinkage"
    customer_return = "customer_return"


class ReceiveSupply(Command):
    """A supplier delivered ``quantity`` units of an item to a store."""

    store_id: str
    item_id: str
    supplier_id: str
    quantity: PositiveInt


class RecordSale(Command):
    """The store's POS sold ``quantity`` units at ``unit_price``."""

    store_id: str
    item_id: str
    sale_id: str
    quantity: PositiveInt
    unit_price: Price


class AdjustStock(Command):
    """Correct the stock by ``delta`` units (negative to remove), giving a reason."""

    store_id: str
    item_id: str
    delta: int
    reason: AdjustmentReason
    note: str | None = Field(default=None, description="Free text for the auditor.")


class SupplyReceived(Event):
    store_id: str
    item_id: str
    supplier_id: str
    quantity: int
    received_at: AwareDatetime


class SaleRecorded(Event):
    store_id: str
    item_id: str
    sale_id: str
    quantity: int
    unit_price: Price
    amount: Money
    sold_at: AwareDatetime


class StockAdjusted(Event):
    store_id: str
    item_id: str
    delta: int
    reason: AdjustmentReason
    note: str | None = None
    adjusted_by: str | None = Field(default=None, description="Principal who adjusted it.")


class StoreStock(State):
    store_id: str
    item_id: str
    on_hand: int = Field(ge=0)
    sold_amount: Money = Decimal("0.00")


stock = retail.aggregate("store_stock", state=StoreStock, id=lambda c: f"{c.store_id}/{c.item_id}")


@stock.decides(ReceiveSupply, creates=True)
def receive_supply(state: StoreStock | None, cmd: ReceiveSupply, meta: Metadata) -> SupplyReceived:
    return SupplyReceived(
        store_id=cmd.store_id,
        item_id=cmd.item_id,
        supplier_id=cmd.supplier_id,
        quantity=cmd.quantity,
        received_at=meta.issued_at,
    )


@stock.decides(RecordSale)
def record_sale(state: StoreStock, cmd: RecordSale, meta: Metadata) -> SaleRecorded:
    if cmd.quantity > state.on_hand:
        where = f"item {cmd.item_id} in store {cmd.store_id}"
        message = f"cannot sell {cmd.quantity} of {where}: {state.on_hand} on hand"
        raise Rejected("insufficient_stock", message)
    return SaleRecorded(
        store_id=cmd.store_id,
        item_id=cmd.item_id,
        sale_id=cmd.sale_id,
        quantity=cmd.quantity,
        unit_price=cmd.unit_price,
        amount=cmd.unit_price * cmd.quantity,
        sold_at=meta.issued_at,
    )


@stock.decides(AdjustStock)
def adjust_stock(state: StoreStock, cmd: AdjustStock, meta: Metadata) -> StockAdjusted:
    if (after := state.on_hand + cmd.delta) < 0:
        raise Rejected("negative_stock", f"adjusting by {cmd.delta} would leave {after} on hand")
    return StockAdjusted(
        store_id=cmd.store_id,
        item_id=cmd.item_id,
        delta=cmd.delta,
        reason=cmd.reason,
        note=cmd.note,
        adjusted_by=meta.principal,
    )


@stock.evolves(SupplyReceived, creates=True)
def supply_received(state: StoreStock | None, event: SupplyReceived) -> StoreStock:
    if state is None:
        return StoreStock(store_id=event.store_id, item_id=event.item_id, on_hand=event.quantity)
    return state.model_copy(update={"on_hand": state.on_hand + event.quantity})


@stock.evolves(SaleRecorded)
def sale_recorded(state: StoreStock, event: SaleRecorded) -> StoreStock:
    sold = state.sold_amount + event.amount
    return state.model_copy(update={"on_hand": state.on_hand - event.quantity, "sold_amount": sold})


@stock.evolves(StockAdjusted)
def stock_adjusted(state: StoreStock, event: StockAdjusted) -> StoreStock:
    return state.model_copy(update={"on_hand": state.on_hand + event.delta})
