"""The retail example domain: suppliers, a catalogue of items, stock per store, purchase
orders, customer purchases and their invoices, the sagas that connect them and the
handler that notifies customers."""

from __future__ import annotations

from topologies.retail import handlers, sagas
from topologies.retail.domain import items, retail, stock, suppliers

__all__ = ["handlers", "items", "retail", "sagas", "stock", "suppliers"]
