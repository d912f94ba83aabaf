"""The retail example domain: suppliers, a catalogue of items, stock per store, purchase
orders, customer purchases and their invoices, and the sagas that connect them."""

from __future__ import annotations

from topologies.retail import sagas
from topologies.retail.domain import items, retail, stock, suppliers

__all__ = ["items", "retail", "sagas", "stock", "suppliers"]
