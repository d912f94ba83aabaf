"""``streamfold demo`` with a small day: its reports equal a computation from the commands,
the sagas' work (purchase orders, purchases, the stock they move) and the notifications too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from topologies.retail.day import retail_day

from streamfold.cli.demo import comparable, run_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def test_the_demo_reports_equal_an_independent_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    console = Console(file=(tmp_path / "out.txt").open("w"), width=160)
    reports = run_demo(commands=600, seed=7, home=tmp_path / "demo", console=console)
    # The replenished supplies are received on the day the sagas ran (the wall clock's).
    day = retail_day(commands=600, seed=7)
    expected = day.expected(replenished_on=datetime.now(UTC).date())
    assert set(reports) == set(expected)
    for name, rows in expected.items():
        _columns, got = reports[name]
        assert [tuple(comparable(v) for v in row) for row in got] == [
            tuple(comparable(v) for v in row) for row in rows
        ], name
    assert expected["store_daily_sales"] and expected["rejected_sales"]
    # The day exercises every path of the sagas.
    orders = {row[0]: row for row in expected["purchase_orders"]}
    assert sum(r[4] for r in orders.values()) > 0  # delivered
    assert sum(r[5] for r in orders.values()) > 0  # late: reordered
    assert sum(r[6] for r in orders.values()) > 0  # then cancelled
    assert sum(r[3] for r in orders.values()) == 0  # none left open
    purchases = expected["purchases"]
    outcomes = {(r[6], r[8], r[9]) for r in purchases}
    assert outcomes == {
        ("completed", "paid", "shipped"),
        ("cancelled", "payment_failed", "returned"),
        ("cancelled", "voided", "not shipped"),
    }
    cancelled = [r for r in purchases if r[6] == "cancelled"]
    assert len(reports["notifications"][1]) == len(cancelled) == len(expected["notifications"])
    printed = (tmp_path / "out.txt").read_text()
    assert "Daily sales per store" in printed and "Stack stopped." in printed
    assert "Purchase orders per supplier" in printed and "Customer purchases" in printed
    assert f"notify_customer wrote {len(cancelled)} notifications" in printed
    assert "reports equal Day.expected()" in printed
