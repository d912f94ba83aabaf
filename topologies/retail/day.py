"""A realistic day of retail traffic with a fixed seed, and what its reports must show.

:func:`retail_day` makes the commands of one trading day, in phases that are sent one after
the other (each once the previous one is processed):

1. ``records``: suppliers registered, items catalogued and opening deliveries, reorder
   policies for some stocks, then deliveries, sales and stock corrections across the day's
   hours in several stores, including sales the stock cannot cover (rejected), corrections
   that would go below zero (rejected) and records that are not commands at all
   (dead-lettered). Sales that take a stock below its reorder point start the
   ``replenishment`` saga: one purchase order each, id ``"{store}/{item}/{sale_id}"``.
   "Prompt" policies have a long lead time; "late" ones a few seconds, so their orders are
   reordered, then cancelled, while the demo runs.
2. ``deliveries``: every purchase order of a prompt policy is confirmed (the saga receives
   it into the stock); ``purchases``: customers' purchases (``purchase_flow``), each well
   within its stock as the trading left it, whatever the order the sagas' commands take,
   and a few that no stock can ship (rejected, whatever the order).
3. ``payments``: the payment provider's answer for each shippable purchase's invoice, some
   failing (the purchase is cancelled, its stock taken back, the customer notified).

Each command carries its ``issued_at`` time and a principal (a store's till, a supplier's
driver, a manager, the web shop, the payment provider).

:meth:`Day.expected` computes the BI reports (and the customer notifications) from the
commands alone, with plain Python and none of streamfold's code, so a test can hold the
projected reports against it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from streamfold import Command
from topologies.retail.domain import (
    AddItem,
    AdjustmentReason,
    AdjustStock,
    ConfirmDelivery,
    PlacePurchase,
    ReceiveSupply,
    RecordPayment,
    RecordSale,
    RegisterSupplier,
    SetReorderPolicy,
)

__all__ = ["Day", "Sent", "retail_day"]

DAY = date(2026, 11, 23)
LOW_STOCK = 5
#: A prompt supplier's lead time: longer than any demo, so its orders are never late.
PROMPT_LEAD_SECONDS = 3600
#: A purchase no stock can ship: more than any stock of the day ever holds.
UNSHIPPABLE = 10_000
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
    """The day's records in sending order, phase by phase, and the names the reports join.

    ``records`` is the trading day; ``deliveries`` and ``purchases`` go once it is processed
    (and its purchase orders raised); ``payments`` once the purchases' invoices are issued.
    """

    records: list[Sent] = field(default_factory=list)
    deliveries: list[Sent] = field(default_factory=list)
    purchases: list[Sent] = field(default_factory=list)
    payments: list[Sent] = field(default_factory=list)
    supplier_names: dict[str, str] = field(default_factory=dict)
    item_names: dict[str, str] = field(default_factory=dict)

    @property
    def phases(self) -> list[list[Sent]]:
        return [self.records, self.deliveries + self.purchases, self.payments]

    @property
    def commands(self) -> int:
        """The commands the day sends (the sagas send more)."""
        return sum(1 for phase in self.phases for r in phase if r.command is not None)

    def purchase_orders(self) -> dict[str, tuple[str, str, str, int]]:
        """The purchase orders the trading raises: id -> (store, item, supplier, quantity)."""
        orders: dict[str, tuple[str, str, str, int]] = _trade(self.records)[2]
        return orders

    def expected(self, replenished_on: date | None = None) -> dict[str, list[tuple[Any, ...]]]:
        """The reports of connectors/retail/queries, computed from the commands alone, and
        ``notifications``: (customer, purchase, reason) of each cancelled purchase.

        ``replenished_on``: the day the confirmed purchase orders are received into the
        stock. The saga's ReceiveSupply carries the time the saga ran (the wall clock), not
        a time of the simulated day, so the caller says which day that was (default: today,
        UTC)."""
        replenished_on = replenished_on or datetime.now(UTC).date()
        stock, sold, orders, supply, sales, rejected = _trade(self.records)
        confirmed = {
            r.command.po_id for r in self.deliveries if isinstance(r.command, ConfirmDelivery)
        }
        # The replenishment saga: a confirmed order is received; a late one reordered once,
        # then cancelled.
        by_supplier: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
        for po_id, (store, item, supplier, quantity) in sorted(orders.items()):
            counts = by_supplier[supplier]
            counts[0] += 1
            if po_id in confirmed:
                counts[2] += 1
                counts[5] += quantity
                stock[(store, item)] += quantity
                supply[(replenished_on, supplier)][0] += 1
                supply[(replenished_on, supplier)][1] += quantity
            else:
                counts[3] += 1
                counts[4] += 1
        # Customers' purchases: shipped when the stock holds them, paid or not.
        paid = {
            r.command.purchase_id: r.command.succeeded
            for r in self.payments
            if isinstance(r.command, RecordPayment)
        }
        purchases = []
        notifications = []
        for record in self.purchases:
            p = record.command
            assert isinstance(p, PlacePurchase)
            key = (p.store_id, p.item_id)
            if key not in stock or p.quantity > stock[key]:
                code = "insufficient_stock" if key in stock else "not_found"
                status, reason, invoice, delivery = (
                    "cancelled",
                    f"not shipped: {code}",
                    "voided",
                    "not shipped",
                )
            elif paid.get(p.purchase_id):
                stock[key] -= p.quantity
                status, reason, invoice, delivery = "completed", None, "paid", "shipped"
            elif p.purchase_id in paid:  # failed: shipped, then taken back
                status, reason, invoice, delivery = (
                    "cancelled",
                    "payment_failed",
                    "payment_failed",
                    "returned",
                )
            else:
                raise ValueError(f"purchase {p.purchase_id} has no payment and would stay open")
            if reason is not None:
                notifications.append((p.customer_id, p.purchase_id, reason))
            row = (p.purchase_id, p.customer_id, p.store_id, p.item_id, p.quantity, p.amount)
            purchases.append((*row, status, reason, invoice, delivery))
        current = sorted((s, i, stock[(s, i)], sold[(s, i)]) for s, i in stock)
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
            "purchase_orders": [
                (s, self.supplier_names[s], *counts) for s, counts in sorted(by_supplier.items())
            ],
            "purchases": sorted(purchases),
            "notifications": sorted(notifications),
        }


def _trade(records: Iterable[Sent]) -> tuple[Any, ...]:
    """The trading day, command by command: stock, sold amounts, purchase orders raised,
    supply and sales per day, and rejected sales."""
    stock: dict[tuple[str, str], int] = {}
    sold: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    policies: dict[tuple[str, str], SetReorderPolicy] = {}
    orders: dict[str, tuple[str, str, str, int]] = {}
    supply: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0])
    sales: dict[tuple[date, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    far = datetime.max.replace(tzinfo=UTC)
    rejected: dict[tuple[str, str], list[Any]] = defaultdict(
        lambda: [0, 0, set(), far, datetime.min.replace(tzinfo=UTC)]
    )
    for record in records:
        c, day = record.command, record.issued_at.date()
        if isinstance(c, ReceiveSupply):
            key = (c.store_id, c.item_id)
            stock[key] = stock.get(key, 0) + c.quantity
            supply[(day, c.supplier_id)][0] += 1
            supply[(day, c.supplier_id)][1] += c.quantity
        elif isinstance(c, SetReorderPolicy):
            if (c.store_id, c.item_id) in stock:
                policies[(c.store_id, c.item_id)] = c
        elif isinstance(c, RecordSale):
            key = (c.store_id, c.item_id)
            if key not in stock or c.quantity > stock[key]:
                code = "insufficient_stock" if key in stock else "not_found"
                refused = rejected[(c.store_id, code)]
                refused[0] += 1
                refused[1] += c.quantity
                refused[2].add(record.principal)
                refused[3] = min(refused[3], record.issued_at)
                refused[4] = max(refused[4], record.issued_at)
                continue
            before = stock[key]
            stock[key] -= c.quantity
            policy = policies.get(key)
            if policy is not None and stock[key] < policy.reorder_point <= before:
                po_id = f"{c.store_id}/{c.item_id}/{c.sale_id}"
                orders[po_id] = (c.store_id, c.item_id, policy.supplier_id, policy.reorder_quantity)
            sold[key] += c.unit_price * c.quantity
            total = sales[(day, c.store_id)]
            total[0] += 1
            total[1] += c.quantity
            total[2] += c.unit_price * c.quantity
        elif isinstance(c, AdjustStock):
            key = (c.store_id, c.item_id)
            if key in stock and stock[key] + c.delta >= 0:
                stock[key] += c.delta
    return stock, sold, orders, supply, sales, rejected


def retail_day(
    commands: int = 3000, stores: int = 6, items: int = 24, suppliers: int = 4, seed: int = 2026
) -> Day:
    """About ``commands`` records of one trading day (~1 % of them garbage), at least the
    opening: suppliers, the catalogue and the opening deliveries; then the reorder policies,
    the trading, the confirmed deliveries, the customers' purchases and their payments."""
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
    opened: dict[tuple[str, str], int] = {}
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
                opened[(store, item)] = quantity
    # The trading day, 08:00 to 20:00: more deliveries in the morning, sales all day long.
    trading: list[Sent] = []
    count = max(0, commands - len(day.records))
    moments = sorted(rng.uniform(3600, 13 * 3600) for _ in range(count))
    for n, second in enumerate(moments):
        at = opening + timedelta(seconds=round(second, 3))  # milliseconds, as stored
        store, item = rng.choice(store_ids), rng.choice(item_ids)
        draw = rng.random()
        if draw < 0.01:
            trading.append(Sent(None, at, f"till-{store}", garbage=rng.randbytes(24)))
        elif draw < (0.35 if at.hour < 12 else 0.15):
            supplier = rng.choice(supplier_ids)
            command: Command = ReceiveSupply(
                store_id=store, item_id=item, supplier_id=supplier, quantity=rng.randint(4, 24)
            )
            trading.append(Sent(command, at, f"driver-{supplier}"))
        elif draw < 0.95:
            command = RecordSale(
                store_id=store,
                item_id=item,
                sale_id=f"{store}-{n}",
                quantity=rng.choice((1, 1, 1, 2, 2, 3, 5)),
                unit_price=prices[item],
            )
            trading.append(Sent(command, at, f"till-{store}"))
        else:
            command = AdjustStock(
                store_id=store,
                item_id=item,
                delta=rng.choice((-6, -3, -2, -1, 1, 2)),
                reason=rng.choice(list(AdjustmentReason)),
                note="end-of-shift count",
            )
            trading.append(Sent(command, at, f"manager-{store}"))
    # The rest has a generator of its own, so the trading is the same as without it.
    more = random.Random(f"{seed}/replenishment and purchases")
    day.records.extend(_policies(more, day.records, trading, opened, supplier_ids, stores * items))
    day.records.extend(trading)
    _purchases(more, day, prices, at=datetime(DAY.year, DAY.month, DAY.day, 20, 0, tzinfo=UTC))
    return day


def _policies(
    rng: random.Random,
    opening: list[Sent],
    trading: list[Sent],
    opened: dict[tuple[str, str], int],
    supplier_ids: list[str],
    stocks: int,
) -> list[Sent]:
    """Reorder policies at 08:00 for some stocks whose trading crosses the reorder point (the
    opening quantity): alternately prompt (their orders get confirmed) and late (a lead
    time of a few seconds: reordered, then cancelled, while the demo runs)."""
    at = datetime(DAY.year, DAY.month, DAY.day, 8, 0, tzinfo=UTC)
    candidates = sorted(opened)
    rng.shuffle(candidates)
    chosen: list[Sent] = []
    for store, item in candidates:
        if len(chosen) >= max(4, stocks // 18):
            break
        policy = SetReorderPolicy(
            store_id=store,
            item_id=item,
            supplier_id=rng.choice(supplier_ids),
            reorder_point=opened[(store, item)],
            reorder_quantity=rng.randint(8, 16),
            lead_time_seconds=PROMPT_LEAD_SECONDS if len(chosen) % 2 == 0 else rng.randint(2, 4),
        )
        record = Sent(policy, at, f"manager-{store}")
        if _trade([*opening, record, *trading])[2]:  # it raises purchase orders
            chosen.append(record)
    return chosen


def _purchases(rng: random.Random, day: Day, prices: dict[str, Decimal], at: datetime) -> None:
    """The deliveries confirmed (prompt policies), the customers' purchases and payments."""
    prompt = {
        (r.command.store_id, r.command.item_id)
        for r in day.records
        if isinstance(r.command, SetReorderPolicy)
        and r.command.lead_time_seconds == PROMPT_LEAD_SECONDS
    }
    stock, _sold, orders, *_ = _trade(day.records)
    for n, (po_id, (store, item, supplier, _quantity)) in enumerate(sorted(orders.items())):
        if (store, item) in prompt:
            confirm = ConfirmDelivery(po_id=po_id)
            day.deliveries.append(Sent(confirm, at + timedelta(seconds=n), f"driver-{supplier}"))
    most = max(stock.values(), default=0) + sum(q for *_, q in orders.values())
    assert most < UNSHIPPABLE, "a stock could hold the unshippable purchase"
    # Purchases: within what the trading left (whatever else arrives or leaves meanwhile,
    # only sales lower a stock, and there are none by then), and a few no stock can ship.
    left = {key: n for key, n in sorted(stock.items()) if n >= 2}
    wanted = max(6, len(day.records) // 100)
    placed: list[tuple[str, str, int]] = []
    while left and len(placed) < wanted:
        key = rng.choice(sorted(left))
        quantity = rng.randint(1, min(3, left[key] // 2))
        left[key] -= quantity
        if left[key] < 2:
            del left[key]
        placed.append((*key, quantity))
    for key in rng.sample(sorted(stock), min(2, len(stock))):
        placed.insert(rng.randrange(len(placed) + 1), (*key, UNSHIPPABLE))
    shippable = [n for n, (*_, q) in enumerate(placed) if q != UNSHIPPABLE]
    failing = {n for n in shippable if rng.random() < 0.25} or set(shippable[:1])
    for n, (store, item, quantity) in enumerate(placed):
        purchase_id = f"purchase-{n + 1:03d}"
        when = at + timedelta(minutes=n + 1)
        purchase = PlacePurchase(
            purchase_id=purchase_id,
            customer_id=f"customer-{rng.randint(1, 40):02d}",
            store_id=store,
            item_id=item,
            quantity=quantity,
            amount=prices[item] * quantity,
        )
        day.purchases.append(Sent(purchase, when, "web-shop"))
        if quantity != UNSHIPPABLE:  # its invoice is voided; a payment would race with that
            payment = RecordPayment(purchase_id=purchase_id, succeeded=n not in failing)
            day.payments.append(Sent(payment, when + timedelta(minutes=3), "payment-provider"))
