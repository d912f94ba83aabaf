"""Retail's processes: replenishing a store's stock, and a customer's purchase.

``replenishment`` (one per purchase order): a sale that takes the stock below its reorder
point raises a purchase order with the policy's supplier and waits its lead time. A
confirmed delivery is received into the stock. A delivery that is late is reordered once
from the same supplier; late again, the order is cancelled (and so recorded). It ends when
the order is delivered or cancelled, whichever the order's aggregate decided first.

``purchase_flow`` (one per purchase): a placed purchase issues its invoice and ships it from the
store. Paid and shipped, it is completed. A failed payment cancels it (the notification is
an event handler's), and stock already shipped is taken back. A shipment the store rejects
voids the invoice (refunding it if paid) and cancels the purchase.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from pydantic import BaseModel

from streamfold.domain import State
from streamfold.domain.saga import CommandOutcome, SagaStep
from topologies.retail import domain as d

M = TypeVar("M", bound=BaseModel)


def _as(model: type[M], source: BaseModel, **more: object) -> M:
    """``model`` from the fields of ``source`` it has (and ``more``)."""
    return model(**source.model_dump(include=set(model.model_fields) - set(more)), **more)


# --- replenishment ----------------------------------------------------------------------
class Replenishment(d.OrderTerms, State):
    lead_time_seconds: int
    reordered: bool = False


replenishment = d.retail.saga(
    "replenishment",
    state=Replenishment,
    sends=[d.RaisePurchaseOrder, d.ReorderPurchaseOrder, d.CancelPurchaseOrder, d.ReceiveSupply],
)


def _po_of(low: d.StockBelowReorderPoint) -> str:
    return f"{low.store_id}/{low.item_id}/{low.sale_id}"


@replenishment.on(d.StockBelowReorderPoint, correlate=_po_of, starts=True)
def stock_low(state: None, low: d.StockBelowReorderPoint) -> SagaStep[Replenishment]:
    order = _as(Replenishment, low, po_id=_po_of(low), quantity=low.reorder_quantity)
    return SagaStep(order, send=[_as(d.RaisePurchaseOrder, order)], timers=_due(order))


@replenishment.on(d.DeliveryConfirmed, correlate=lambda e: e.po_id)
def delivered(state: Replenishment, event: d.DeliveryConfirmed) -> SagaStep[Replenishment]:
    return SagaStep(None, send=[_as(d.ReceiveSupply, event)], end=True)


@replenishment.on(d.PurchaseOrderCancelled, correlate=lambda e: e.po_id)
def cancelled(state: Replenishment, event: d.PurchaseOrderCancelled) -> SagaStep[Replenishment]:
    return SagaStep(None, end=True)


@replenishment.on_timer("delivery_due")
def late(state: Replenishment, _timer: object) -> SagaStep[Replenishment]:
    if state.reordered:  # late again: cancel (a delivery confirmed meanwhile still counts)
        return SagaStep(state, send=[d.CancelPurchaseOrder(po_id=state.po_id, reason="late")])
    reorder = d.ReorderPurchaseOrder(po_id=state.po_id)
    return SagaStep(
        state.model_copy(update={"reordered": True}), send=[reorder], timers=_due(state)
    )


def _due(order: Replenishment) -> dict[str, timedelta]:
    return {"delivery_due": timedelta(seconds=order.lead_time_seconds)}


# --- purchase ---------------------------------------------------------------------------
class PurchaseFlow(State):
    purchase_id: str
    store_id: str
    item_id: str
    quantity: int
    shipped: bool = False  # False: its outcome is not known yet
    paid: bool = False
    cancelled: bool = False


purchase = d.retail.saga(
    "purchase_flow",
    state=PurchaseFlow,
    sends=[d.IssueInvoice, d.ShipPurchase, d.ClosePurchase, d.VoidInvoice, d.AdjustStock],
)


@purchase.on(d.PurchasePlaced, correlate=lambda e: e.purchase_id, starts=True)
def placed(state: PurchaseFlow | None, event: d.PurchasePlaced) -> SagaStep[PurchaseFlow]:
    invoice, ship = _as(d.IssueInvoice, event), _as(d.ShipPurchase, event)
    return SagaStep(_as(PurchaseFlow, event), send=[invoice, ship])


@purchase.on_outcome(d.ShipPurchase)
def shipping(state: PurchaseFlow, outcome: CommandOutcome) -> SagaStep[PurchaseFlow]:
    if state.cancelled:  # the payment failed first: take back what was shipped
        return SagaStep(None, send=_take_back(state) if outcome.accepted else [], end=True)
    if outcome.accepted:
        return _progress(state.model_copy(update={"shipped": True}))
    void = d.VoidInvoice(purchase_id=state.purchase_id, reason="not_shipped")
    close = d.ClosePurchase(purchase_id=state.purchase_id, reason=f"not shipped: {outcome.code}")
    return SagaStep(None, send=[void, close], end=True)


@purchase.on(d.InvoiceChanged, correlate=lambda e: e.purchase_id)
def invoice_changed(state: PurchaseFlow, event: d.InvoiceChanged) -> SagaStep[PurchaseFlow]:
    if event.status == "paid":
        return _progress(state.model_copy(update={"paid": True}))
    if event.status != "payment_failed":
        return SagaStep(state)  # issued, or voided by this saga
    close = d.ClosePurchase(purchase_id=state.purchase_id, reason="payment_failed")
    if not state.shipped:  # wait for the shipment's outcome
        return SagaStep(state.model_copy(update={"cancelled": True}), send=[close])
    return SagaStep(None, send=[close, *_take_back(state)], end=True)


def _progress(flow: PurchaseFlow) -> SagaStep[PurchaseFlow]:
    if flow.paid and flow.shipped:
        return SagaStep(None, send=[d.ClosePurchase(purchase_id=flow.purchase_id)], end=True)
    return SagaStep(flow)


def _take_back(flow: PurchaseFlow) -> list[d.AdjustStock]:
    note, reason = f"purchase {flow.purchase_id} cancelled", d.AdjustmentReason.customer_return
    return [_as(d.AdjustStock, flow, delta=flow.quantity, reason=reason, note=note)]
