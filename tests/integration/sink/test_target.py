"""The ClickHouse target on the real engine (chDB): evolution and deduplication."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from topologies.retail.domain import retail

from streamfold.sink.ddl import aggregate_tables
from streamfold.sink.target import ClickHouseTarget
from streamfold.sink.types import Column

pytestmark = pytest.mark.integration


def _row(columns: tuple[Column, ...], **values: object) -> list[object]:
    defaults: dict[str, object] = {
        "tenant": "",
        "aggregate_id": "s/i",
        "version": 1,
        "deleted": 0,
        "updated_at": datetime(2026, 11, 23, tzinfo=UTC),
        "command_id": "c",
        "store_id": "s",
        "item_id": "i",
        "on_hand": 3,
        "sold_amount": 0,
        "_topic": "t",
        "_partition": 0,
        "_offset": 0,
    }
    return [values.get(c.name, defaults.get(c.name)) for c in columns]


def test_a_new_optional_field_adds_a_column_and_keeps_the_rows(tmp_path: Path) -> None:
    current = aggregate_tables(retail, "store_stock")[1]  # the state history
    old = dataclasses.replace(
        current, columns=tuple(c for c in current.columns if c.name != "sold_amount")
    )
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "retail")
    try:
        assert target.ensure([old]) == []
        target.insert(old, [_row(old.columns)], "t1")
        evolved = dataclasses.replace(
            current, columns=(*current.columns, Column("shelf", "Nullable(String)"))
        )
        added = target.ensure([evolved])
        assert added == [f"{current.name}.sold_amount", f"{current.name}.shelf"]
        target.insert(evolved, [_row(evolved.columns, version=2, shelf="A3", _offset=1)], "t2")
        _c, rows = target.query(
            f"SELECT version, sold_amount, shelf FROM retail.{current.name} ORDER BY version"
        )
        assert [(r[0], float(r[1]), r[2]) for r in rows] == [(1, 0.0, None), (2, 0.0, "A3")]
    finally:
        target.close()


def test_an_insert_retried_with_its_token_lands_once(tmp_path: Path) -> None:
    table = aggregate_tables(retail, "store_stock")[1]
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "retail")
    try:
        target.ensure([table])
        rows = [_row(table.columns, version=v, _offset=v) for v in range(1, 101)]
        for _ in range(3):
            target.insert(table, rows, "retail:history:t:0:1-100")
        target.insert(table, rows[:10], "retail:history:t:0:1-10")  # another range: lands
        _c, result = target.query(f"SELECT count() FROM retail.{table.name}")
        assert result[0][0] == 110
    finally:
        target.close()
