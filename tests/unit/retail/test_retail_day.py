"""The demo's day: deterministic, and designed so its reports do not depend on the order in
which the sagas' commands are processed."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from topologies.retail.day import PROMPT_LEAD_SECONDS, UNSHIPPABLE, retail_day
from topologies.retail.domain import PlacePurchase, RecordPayment, SetReorderPolicy


def test_the_same_seed_makes_the_same_day() -> None:
    on = date(2026, 12, 1)
    assert retail_day(600, seed=7).expected(on) == retail_day(600, seed=7).expected(on)
    assert retail_day(600, seed=7).expected(on) != retail_day(600, seed=8).expected(on)


def test_the_day_takes_every_path_of_the_sagas() -> None:
    day = retail_day(600, seed=7)
    expected = day.expected(date(2026, 12, 1))
    orders = expected["purchase_orders"]
    assert sum(r[4] for r in orders) and sum(r[5] for r in orders) and sum(r[6] for r in orders)
    assert sum(r[3] for r in orders) == 0
    assert {(r[6], r[8], r[9]) for r in expected["purchases"]} == {
        ("completed", "paid", "shipped"),
        ("cancelled", "payment_failed", "returned"),
        ("cancelled", "voided", "not shipped"),
    }
    cancelled = {r[0] for r in expected["purchases"] if r[6] == "cancelled"}
    assert {r[1] for r in expected["notifications"]} == cancelled
    policies = [r.command for r in day.records if isinstance(r.command, SetReorderPolicy)]
    assert {p.lead_time_seconds == PROMPT_LEAD_SECONDS for p in policies} == {True, False}


def test_purchases_fit_the_stock_whatever_the_order() -> None:
    day = retail_day(3000)
    stock = {(r[0], r[1]): r[2] for r in day.expected(date(2026, 12, 1))["current_stock"]}
    wanted: dict[tuple[str, str], int] = defaultdict(int)
    paid = {r.command.purchase_id for r in day.payments if isinstance(r.command, RecordPayment)}
    for record in day.purchases:
        p = record.command
        assert isinstance(p, PlacePurchase)
        if p.quantity == UNSHIPPABLE:
            assert p.purchase_id not in paid  # its payment would race with the voiding
        else:
            assert p.purchase_id in paid
            wanted[(p.store_id, p.item_id)] += p.quantity
    assert all(stock[key] >= 0 for key in wanted)
    delivery = {r[0]: r[9] for r in day.expected(date(2026, 12, 1))["purchases"]}
    for record in day.purchases:
        p = record.command
        assert isinstance(p, PlacePurchase)
        shipped = delivery[p.purchase_id] != "not shipped"
        assert shipped == (p.quantity != UNSHIPPABLE), p.purchase_id
