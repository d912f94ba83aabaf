"""``streamfold demo`` with a small day: its reports equal a computation from the commands."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from topologies.retail.day import retail_day

from streamfold.cli.demo import run_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _cell(value: Any) -> Any:
    """One comparable form for a value from ClickHouse (through JSON) or from Python."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    text = str(value)
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def test_the_demo_reports_equal_an_independent_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    console = Console(file=(tmp_path / "out.txt").open("w"), width=160)
    reports = run_demo(commands=600, seed=7, home=tmp_path / "demo", console=console)
    expected = retail_day(commands=600, seed=7).expected()
    assert set(reports) == set(expected)
    for name, rows in expected.items():
        _columns, got = reports[name]
        assert [tuple(_cell(v) for v in row) for row in got] == [
            tuple(_cell(v) for v in row) for row in rows
        ], name
    assert expected["store_daily_sales"] and expected["rejected_sales"]
    printed = (tmp_path / "out.txt").read_text()
    assert "Daily sales per store" in printed and "Stack stopped." in printed
