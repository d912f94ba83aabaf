"""A realistic day of retail traffic with a fixed seed, and what its reports must show.

:func:`retail_day` makes the commands of one trading day: suppliers registered and items
catalogued at opening, then deliveries, sales and stock corrections across the day's hours in
several stores, including sales the stock cannot cover (rejected), corrections that would go
below zero (rejected) and records that are not commands at all (dead-lettered). Each command
carries its ``issued_at`` time and a principal (a store's till, a supplier's driver, a
manager).

:meth:`Day.expected` computes the BI reports from the commands alone, with plain Python and
none of streamfold's code, so a test can hold the projected reports against it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from streamfold.domain import Command
from topologies.retail.domain import (
    AddItem,
    AdjustmentReason,
    AdjustStock,
    ReceiveSupply,
    RecordSale,
    RegisterSupplier,
)

__all__ = ["Day", "Sent", "retail_day"]

DAY = date(2026, 11, 23)
LOW_STOCK = 5
_SUPPLIERS = ["Northern Farms", "Coastal Roastery", "Valley Dairy", "Hill Bakery", "Urban Greens"]
_PRODUCTS = [
    "espresso beans", "oat milk", "sourdough loaf", "croissant", "cheddar", "apples",
    "spinach", "honey", "granola", "yoghurt", "olive oil", "tomatoes", "butter", "eggs",
    "rye bread", "cold brew", "muesli", "feta", "pears", "kale", "jam", "baguette",
    "mozzarella", "carrots", "green tea", "dark chocolate", "cream", "lemons", "bagels", "brie",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sent:
    """One record of the day: a command (or ``garbage`` bytes) with its headers."""

    command: Command | None
    issued_at: datetime
    principal: str
    garbage: bytes | None = None


@dataclass
class Day:
    """The day's records in sending order, and the names the reports join."""

    records: list[Sent] = field(default_factory=list)
    supplier_names: dict[str, str] = field(default_factory=dict)
    item_names: dict[str, str] = field(default_factory=dict)

    @property
    def commands(self) -> int:
        return sum(1 for r in self.records if r.command is not None)

    def expected(self) -> dict[str, list[tuple[Any, ...]]]:
        """The reports of connectors/retail/reports, computed from the commands alone."""
        stock: dict[tuple[str, str], int] = defaultdict(int)
        sold: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        known: set[tuple[str, str]] = set()
        supply: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0])
        sales: dict[tuple[date, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
        far = datetime.max.replace(tzinfo=UTC)
        rejected: dict[tuple[str, str], list[Any]] = defaultdict(
            lambda: [0, 0, set(), far, datetime.min.replace(tzinfo=UTC)]
        )
        for record in self.records:
            c, day = record.command, record.issued_at.date()
            if isinstance(c, ReceiveSupply):
                key = (c.store_id, c.item_id)
                known.add(key)
                stock[key] += c.quantity
                supply[(day, c.supplier_id)][0] += 1
                supply[(day, c.supplier_id)][1] += c.quantity
            elif isinstance(c, RecordSale):
                key = (c.store_id, c.item_id)
                if key not in known or c.quantity > stock[key]:
                    code = "insufficient_stock" if key in known else "not_found"
                    refused = rejected[(c.store_id, code)]
                    refused[0] += 1
                    refused[1] += c.quantity
                    refused[2].add(record.principal)
                    refused[3] = min(refused[3], record.issued_at)
                    refused[4] = max(refused[4], record.issued_at)
                    continue
                stock[key] -= c.quantity
                sold[key] += c.unit_price * c.quantity
                total = sales[(day, c.store_id)]
                total[0] += 1
                total[1] += c.quantity
                total[2] += c.unit_price * c.quantity
            elif isinstance(c, AdjustStock):
                key = (c.store_id, c.item_id)
                if key in known and stock[key] + c.delta >= 0:
                    stock[key] += c.delta
        current = sorted((s, i, stock[(s, i)], sold[(s, i)]) for s, i in known)
        return {
            "supplier_daily_supply": [
                (d, s, self.supplier_names[s], n, u) for (d, s), (n, u) in sorted(supply.items())
            ],
            "store_daily_sales": [(d, s, *v) for (d, s), v in sorted(sales.items())],
            "current_stock": current,
            "low_stock": sorted(
                ((s, i, self.item_names[i], n) for s, i, n, _ in current if n < LOW_STOCK),
                key=lambda r: (r[3], r[0], r[1]),
            ),
            "rejected_sales": [
                (s, code, n, u, len(who), first, last)
                for (s, code), (n, u, who, first, last) in sorted(rejected.items())
            ],
        }


def retail_day(
    commands: int = 3000, stores: int = 6, items: int = 24, suppliers: int = 4, seed: int = 2026
) -> Day:
    """About ``commands`` records of one trading day (~1 % of them garbage), at least the
    opening: suppliers, the catalogue and the opening deliveries."""
    rng = random.Random(seed)
    day = Day()
    opening = datetime(DAY.year, DAY.month, DAY.day, 7, 0, tzinfo=UTC)
    supplier_ids = [f"sup-{n + 1}" for n in range(min(suppliers, len(_SUPPLIERS)))]
    item_ids = [f"item-{n + 1:02d}" for n in range(min(items, len(_PRODUCTS)))]
    store_ids = [f"store-{n + 1}" for n in range(stores)]
    prices = {i: Decimal(rng.randint(120, 1500)) / 100 for i in item_ids}
    for n, supplier_id in enumerate(supplier_ids):
        day.supplier_names[supplier_id] = _SUPPLIERS[n]
        register = RegisterSupplier(supplier_id=supplier_id, name=_SUPPLIERS[n])
        day.records.append(Sent(register, opening, "back-office"))
    for n, item_id in enumerate(item_ids):
        day.item_names[item_id] = _PRODUCTS[n]
        add = AddItem(item_id=item_id, name=_PRODUCTS[n], price=prices[item_id])
        day.records.append(Sent(add, opening, "back-office"))
    # Opening deliveries (07:30-08:00): every store gets most items.
    for store in store_ids:
        for item in item_ids:
            if rng.random() < 0.9:
                supplier = rng.choice(supplier_ids)
                at = opening + timedelta(seconds=round(rng.uniform(1800, 3600), 3))
                quantity = rng.randint(3, 12)
                delivery = ReceiveSupply(
                    store_id=store, item_id=item, supplier_id=supplier, quantity=quantity
                )
                day.records.append(Sent(delivery, at, f"driver-{supplier}"))
    # The trading day, 08:00 to 20:00: more deliveries in the morning, sales all day long.
    count = max(0, commands - len(day.records))
    moments = sorted(rng.uniform(3600, 13 * 3600) for _ in range(count))
    for n, second in enumerate(moments):
        at = opening + timedelta(seconds=round(second, 3))  # milliseconds, as stored
        store, item = rng.choice(store_ids), rng.choice(item_ids)
        draw = rng.random()
        if draw < 0.01:
            day.records.append(Sent(None, at, f"till-{store}", garbage=rng.randbytes(24)))
        elif draw < (0.35 if at.hour < 12 else 0.15):
            supplier = rng.choice(supplier_ids)
            command: Command = ReceiveSupply(
                store_id=store, item_id=item, supplier_id=supplier, quantity=rng.randint(4, 24)
            )
            day.records.append(Sent(command, at, f"driver-{supplier}"))
        elif draw < 0.95:
            command = RecordSale(
                store_id=store,
                item_id=item,
                sale_id=f"{store}-{n}",
                quantity=rng.choice((1, 1, 1, 2, 2, 3, 5)),
                unit_price=prices[item],
            )
            day.records.append(Sent(command, at, f"till-{store}"))
        else:
            command = AdjustStock(
                store_id=store,
                item_id=item,
                delta=rng.choice((-6, -3, -2, -1, 1, 2)),
                reason=rng.choice(list(AdjustmentReason)),
                note="end-of-shift count",
            )
            day.records.append(Sent(command, at, f"manager-{store}"))
    return day
