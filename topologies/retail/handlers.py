"""Retail's event handlers: side effects of its events."""

from __future__ import annotations

import json

from streamfold.domain.handlers import HandlerContext
from topologies.retail.domain import PurchaseClosed, retail

#: Where customers' notifications go (a mailer reads them), under the deployment's prefix.
NOTIFICATIONS = "retail.notifications"


@retail.handler("notify_customer", on=[PurchaseClosed], produces=[NOTIFICATIONS])
def notify_customer(event: PurchaseClosed, context: HandlerContext) -> None:
    """Tell the customer a purchase was cancelled, and why."""
    if event.reason is None:
        return
    notice = {
        "customer_id": event.customer_id,
        "purchase_id": event.purchase_id,
        "reason": event.reason,
        "idempotency_key": context.idempotency_key,
    }
    context.produce(NOTIFICATIONS, event.customer_id, json.dumps(notice, sort_keys=True))
