"""Retail: suppliers deliver items to stores (supplier-wise), each store's POS sells them.

Aggregates: ``supplier``; ``item``, the priced catalogue (discontinued = soft delete);
``store_stock`` (id ``"{store_id}/{item_id}"``, the hot one): supplies raise it, sales lower
it but never below zero, adjustments correct it with an audited reason, and a sale that
takes it below its reorder point says so; ``purchase_order``, the store's order with a
supplier; ``purchase``, a customer's, and its ``invoice``. The sagas are in ``sagas.py``.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, NonNegativeInt, PositiveInt

from streamfold import BoundedContext, Command, Event, Metadata, Rejected, State

retail = BoundedContext("retail", namespace="io.streamfold.retail")

Money = Annotated[Decimal, Field(max_digits=12, decimal_places=2, ge=0)]
Price = Annotated[Decimal, Field(max_digits=12, decimal_places=2, gt=0)]


# --- supplier ---------------------------------------------------------------------------
class _Supplier(BaseModel):
    supplier_id: str
    name: str


class RegisterSupplier(_Supplier, Command): ...


class SupplierRegistered(_Supplier, Event): ...


class Supplier(_Supplier, State): ...


suppliers = retail.aggregate("supplier", state=Supplier, id="supplier_id")


@suppliers.decides(RegisterSupplier, creates=True)
def register_supplier(state: Supplier | None, cmd: RegisterSupplier) -> SupplierRegistered:
    if state is not None:
        raise Rejected("already_exists", f"supplier {cmd.supplier_id} is already registered")
    return SupplierRegistered(**cmd.model_dump())


@suppliers.evolves(SupplierRegistered)
def supplier_registered(state: Supplier | None, event: SupplierRegistered) -> Supplier:
    return Supplier(**event.model_dump())


# --- item (catalogue) -------------------------------------------------------------------
class _Item(BaseModel):
    item_id: str
    name: str
    price: Price


class AddItem(_Item, Command): ...


class ChangePrice(Command):
    item_id: str
    price: Price


class ItemAdded(_Item, Event): ...


class PriceChanged(Event):
    item_id: str
    old_price: Price
    new_price: Price


class Item(_Item, State): ...


items = retail.aggregate("item", state=Item, id="item_id", soft_delete=True)


@items.decides(AddItem, creates=True)
def add_item(state: Item | None, cmd: AddItem) -> ItemAdded:
    if state is not None:
        raise Rejected("already_exists", f"item {cmd.item_id} is already in the catalogue")
    return ItemAdded(**cmd.model_dump())


@items.decides(ChangePrice)
def change_price(state: Item, cmd: ChangePrice) -> list[PriceChanged]:
    changed = PriceChanged(item_id=cmd.item_id, old_price=state.price, new_price=cmd.price)
    return [] if cmd.price == state.price else [changed]


@items.evolves(ItemAdded)
def item_added(state: Item | None, event: ItemAdded) -> Item:
    return Item(**event.model_dump())


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


class _Supply(BaseModel):
    store_id: str
    item_id: str
    supplier_id: str
    quantity: PositiveInt


class ReceiveSupply(_Supply, Command):
    """A supplier delivered ``quantity`` units of an item to a store."""


class _Sale(BaseModel):
    store_id: str
    item_id: str
    sale_id: str
    quantity: PositiveInt
    unit_price: Price


class RecordSale(_Sale, Command):
    """The store's POS sold ``quantity`` units at ``unit_price``."""


class AdjustStock(Command):
    """Correct the stock by ``delta`` units (negative to remove), giving a reason."""

    store_id: str
    item_id: str
    delta: int
    reason: AdjustmentReason
    note: str | None = Field(default=None, description="Free text for the auditor.")


class SupplyReceived(_Supply, Event):
    received_at: AwareDatetime


class SaleRecorded(_Sale, Event):
    amount: Money
    sold_at: AwareDatetime


class StockAdjusted(Event):
    store_id: str
    item_id: str
    delta: int
    reason: AdjustmentReason
    note: str | None = None
    adjusted_by: str | None = Field(default=None, description="Principal who adjusted it.")


class _Policy(BaseModel):
    store_id: str
    item_id: str
    supplier_id: str
    reorder_point: NonNegativeInt
    reorder_quantity: PositiveInt
    lead_time_seconds: PositiveInt


class SetReorderPolicy(_Policy, Command):
    """Order ``reorder_quantity`` from the supplier when a sale leaves fewer than
    ``reorder_point`` on hand; the supplier delivers within ``lead_time_seconds``."""


class ReorderPolicySet(_Policy, Event): ...


class StockBelowReorderPoint(_Policy, Event):
    sale_id: str
    on_hand: int


class _Shipment(BaseModel):
    store_id: str
    item_id: str
    purchase_id: str
    quantity: PositiveInt


class ShipPurchase(_Shipment, Command):
    """Deliver a customer's purchase from the store's stock."""


class PurchaseShipped(_Shipment, Event): ...


class StoreStock(State):
    store_id: str
    item_id: str
    on_hand: int = Field(ge=0)
    sold_amount: Money = Decimal("0.00")
    supplier_id: str | None = None  # the reorder policy, once set
    reorder_point: int = 0
    reorder_quantity: int = 0
    lead_time_seconds: int = 0


def stock_id(message: Any) -> str:
    return f"{message.store_id}/{message.item_id}"


stock = retail.aggregate("store_stock", state=StoreStock, id=stock_id)


@stock.decides(ReceiveSupply, creates=True)
def receive_supply(state: StoreStock | None, cmd: ReceiveSupply, meta: Metadata) -> SupplyReceived:
    return SupplyReceived(
        store_id=cmd.store_id,
        item_id=cmd.item_id,
        supplier_id=cmd.supplier_id,
        quantity=cmd.quantity,
        received_at=meta.issued_at,
    )


@stock.decides(SetReorderPolicy)
def set_reorder_policy(state: StoreStock, cmd: SetReorderPolicy) -> ReorderPolicySet:
    return ReorderPolicySet(**cmd.model_dump())


@stock.decides(RecordSale)
@stock.decides(ShipPurchase)
def take_stock(state: StoreStock, cmd: RecordSale | ShipPurchase, meta: Metadata) -> list[Event]:
    if cmd.quantity > state.on_hand:
        where = f"item {cmd.item_id} in store {cmd.store_id}"
        message = f"cannot sell {cmd.quantity} of {where}: {state.on_hand} on hand"
        raise Rejected("insufficient_stock", message)
    left = state.on_hand - cmd.quantity
    if isinstance(cmd, ShipPurchase):
        return [PurchaseShipped(**cmd.model_dump())]
    events: list[Event] = [_sold(cmd, meta)]
    if state.supplier_id is not None and left < state.reorder_point <= state.on_hand:
        policy = state.model_dump(include=set(_Policy.model_fields))
        events.append(StockBelowReorderPoint(**policy, sale_id=cmd.sale_id, on_hand=left))
    return events


def _sold(cmd: RecordSale, meta: Metadata) -> SaleRecorded:
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


@stock.evolves(SupplyReceived)
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


@stock.evolves(ReorderPolicySet)
@stock.evolves(StockBelowReorderPoint)  # decided under the policy the state holds
def reorder_policy(state: StoreStock, event: _Policy) -> StoreStock:
    return state.model_copy(update=event.model_dump(include=set(_Policy.model_fields)))


@stock.evolves(PurchaseShipped)
def purchase_shipped(state: StoreStock, event: PurchaseShipped) -> StoreStock:
    return state.model_copy(update={"on_hand": state.on_hand - event.quantity})


# --- purchase orders (the store's, with a supplier) -------------------------------------
class OrderTerms(BaseModel):
    """What a purchase order asks of its supplier."""

    po_id: str
    store_id: str
    item_id: str
    supplier_id: str
    quantity: PositiveInt


class RaisePurchaseOrder(OrderTerms, Command): ...


class PurchaseOrderRaised(OrderTerms, Event): ...


class DeliveryConfirmed(OrderTerms, Event): ...


class ConfirmDelivery(Command):
    po_id: str


class ReorderPurchaseOrder(Command):
    po_id: str


class PurchaseOrderReordered(Event):
    po_id: str


class CancelPurchaseOrder(Command):
    po_id: str
    reason: str


class PurchaseOrderCancelled(Event):
    po_id: str
    reason: str


class PurchaseOrder(OrderTerms, State):
    status: str = "open"  # open, delivered, cancelled
    reorders: int = 0


orders = retail.aggregate("purchase_order", state=PurchaseOrder, id="po_id")
OrderChange = ConfirmDelivery | ReorderPurchaseOrder | CancelPurchaseOrder


@orders.decides(RaisePurchaseOrder, creates=True)
def raise_order(state: PurchaseOrder | None, cmd: RaisePurchaseOrder) -> PurchaseOrderRaised:
    if state is not None:
        raise Rejected("already_exists", f"purchase order {cmd.po_id} exists")
    return PurchaseOrderRaised(**cmd.model_dump())


@orders.decides(ConfirmDelivery)
@orders.decides(ReorderPurchaseOrder)
@orders.decides(CancelPurchaseOrder)
def change_order(state: PurchaseOrder, cmd: OrderChange) -> Event:
    if state.status != "open":
        raise Rejected("not_open", f"purchase order {cmd.po_id} is {state.status}")
    if isinstance(cmd, ConfirmDelivery):
        return DeliveryConfirmed(**state.model_dump(include=set(OrderTerms.model_fields)))
    if isinstance(cmd, CancelPurchaseOrder):
        return PurchaseOrderCancelled(po_id=cmd.po_id, reason=cmd.reason)
    return PurchaseOrderReordered(po_id=cmd.po_id)


@orders.evolves(PurchaseOrderRaised)
def order_raised(state: PurchaseOrder | None, event: PurchaseOrderRaised) -> PurchaseOrder:
    return PurchaseOrder(**event.model_dump())


@orders.evolves(DeliveryConfirmed)
@orders.evolves(PurchaseOrderReordered)
@orders.evolves(PurchaseOrderCancelled)
def order_changed(state: PurchaseOrder, event: Event) -> PurchaseOrder:
    if isinstance(event, PurchaseOrderReordered):
        return state.model_copy(update={"reorders": state.reorders + 1})
    done = "delivered" if isinstance(event, DeliveryConfirmed) else "cancelled"
    return state.model_copy(update={"status": done})


# --- customer purchases and their invoices ----------------------------------------------
class _Purchase(BaseModel):
    purchase_id: str
    customer_id: str
    store_id: str
    item_id: str
    quantity: PositiveInt
    amount: Price


class PlacePurchase(_Purchase, Command): ...


class PurchasePlaced(_Purchase, Event): ...


class ClosePurchase(Command):
    """The purchase is done: completed (``reason`` None) or cancelled with a reason."""

    purchase_id: str
    reason: str | None = None


class PurchaseClosed(Event):
    purchase_id: str
    customer_id: str
    reason: str | None = None


class Purchase(_Purchase, State):
    status: str = "placed"  # placed, completed, cancelled
    reason: str | None = None


purchases = retail.aggregate("purchase", state=Purchase, id="purchase_id")


@purchases.decides(PlacePurchase, creates=True)
def place_purchase(state: Purchase | None, cmd: PlacePurchase) -> PurchasePlaced:
    if state is not None:
        raise Rejected("already_exists", f"purchase {cmd.purchase_id} exists")
    return PurchasePlaced(**cmd.model_dump())


@purchases.decides(ClosePurchase)
def close_purchase(state: Purchase, cmd: ClosePurchase) -> PurchaseClosed:
    if state.status != "placed":
        raise Rejected("closed", f"purchase {cmd.purchase_id} is {state.status}")
    return PurchaseClosed(
        purchase_id=cmd.purchase_id, customer_id=state.customer_id, reason=cmd.reason
    )


@purchases.evolves(PurchasePlaced)
def purchase_placed(state: Purchase | None, event: PurchasePlaced) -> Purchase:
    return Purchase(**event.model_dump())


@purchases.evolves(PurchaseClosed)
def purchase_closed(state: Purchase, event: PurchaseClosed) -> Purchase:
    status = "cancelled" if event.reason else "completed"
    return state.model_copy(update={"status": status, "reason": event.reason})


class IssueInvoice(Command):
    purchase_id: str  # one invoice per purchase, under its id
    amount: Price


class RecordPayment(Command):
    """The payment provider's answer for the invoice."""

    purchase_id: str
    succeeded: bool


class VoidInvoice(Command):
    purchase_id: str
    reason: str


class _Invoice(BaseModel):
    purchase_id: str
    status: str
    amount: Money


class InvoiceChanged(_Invoice, Event):
    """Issued, then paid, payment_failed or voided (a paid amount is then refunded)."""


class Invoice(_Invoice, State): ...


invoices = retail.aggregate("invoice", state=Invoice, id="purchase_id")


@invoices.decides(IssueInvoice, creates=True)
@invoices.decides(RecordPayment)
@invoices.decides(VoidInvoice)
def invoice(state: Invoice | None, cmd: IssueInvoice | RecordPayment | VoidInvoice) -> Event:
    if isinstance(cmd, IssueInvoice):
        if state is not None:
            raise Rejected("already_exists", f"invoice {cmd.purchase_id} exists")
        return InvoiceChanged(purchase_id=cmd.purchase_id, status="issued", amount=cmd.amount)
    assert state is not None  # only IssueInvoice creates
    if isinstance(cmd, VoidInvoice) and state.status in ("issued", "paid"):
        status = "voided"
    elif isinstance(cmd, RecordPayment) and state.status == "issued":
        status = "paid" if cmd.succeeded else "payment_failed"
    else:
        raise Rejected("not_open", f"invoice {cmd.purchase_id} is {state.status}")
    return InvoiceChanged(purchase_id=cmd.purchase_id, status=status, amount=state.amount)


@invoices.evolves(InvoiceChanged)
def invoice_changed(state: Invoice | None, event: InvoiceChanged) -> Invoice:
    return Invoice(**event.model_dump())
