"""The retail example domain: suppliers, a catalogue of items, stock per store."""

from __future__ import annotations

from topologies.retail.domain import items, retail, stock, suppliers

__all__ = ["items", "retail", "stock", "suppliers"]
