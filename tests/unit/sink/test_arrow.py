"""The sink's Arrow inserts: the type mapping, and the same table contents as Native inserts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streamfold.sink.arrow import ArrowConversionError, arrow_schema, arrow_table
from streamfold.sink.ddl import TableSpec
from streamfold.sink.target import ClickHouseTarget
from streamfold.sink.types import Column

pytestmark = pytest.mark.unit

DT3 = "DateTime64(3, 'UTC')"
DT6 = "DateTime64(6, 'UTC')"
AT = dt.datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=dt.UTC)
BEFORE_EPOCH = dt.datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=dt.UTC)
ELSEWHERE = dt.datetime(2026, 11, 23, 9, 30, 15, 1000, tzinfo=dt.timezone(dt.timedelta(hours=-5)))

# Every type the DDL emits, with values as the sink's row builders produce them.
TYPED: list[tuple[str, list[Any]]] = [
    ("String", ["a", "é", "raw", ""]),
    ("String", [b"\xff raw", b"{}", b"", b"\x00"]),
    ("Nullable(String)", ["x", None, "", None]),
    ("LowCardinality(String)", ["red", "blue", "red", ""]),
    ("FixedString(3)", [b"abc", b"xyz", b"\x00\x01\x02", b"   "]),
    ("Bool", [True, False, True, False]),
    ("Int32", [0, -(2**31), 2**31 - 1, 7]),
    ("Int64", [0, -(2**63), 2**63 - 1, -1]),
    ("Nullable(Int64)", [None, 1, None, -1]),
    ("UInt8", [0, 1, 255, 0]),
    ("UInt32", [0, 1, 2**32 - 1, 9]),
    ("UInt64", [0, 1, 2**64 - 1, 9]),
    ("Float32", [0.5, -1.25, 3.0, 0.0]),
    ("Float64", [0.1, -1e300, 3.0, 0.0]),
    ("Decimal(12, 2)", [Decimal("9.00"), Decimal("-0.01"), Decimal("9999999999.99"), 0]),
    ("Nullable(Decimal(12, 2))", [None, Decimal("4.50"), None, Decimal("0.00")]),
    ("Decimal(50, 4)", [Decimal("1.2345"), Decimal("-12345678901234567890123.4567"), 0, 1]),
    ("Date32", [dt.date(2026, 11, 23), dt.date(1900, 1, 1), dt.date(1970, 1, 1), dt.date.max]),
    (DT3, [1_763_890_215_123, 0, -1, 1]),
    ("Nullable(" + DT3 + ")", [AT, None, BEFORE_EPOCH, ELSEWHERE]),
    (DT6, [AT, BEFORE_EPOCH, ELSEWHERE, AT]),
    ("Array(String)", [["a", "b"], [], ["é"], [""]]),
    ("Array(Int64)", [[1, -2], [], [0], [2**62]]),
    ("Map(String, Int64)", [{"a": 1}, {}, {"b": -2, "c": 3}, {"": 0}]),
    ("Map(String, String)", [{"k": "v"}, {}, {"é": ""}, {"x": "y"}]),
]


def _table(name: str, types: list[str]) -> TableSpec:
    columns = tuple(Column(f"c{i}", t) for i, t in enumerate(types))
    return TableSpec(name, (Column("k", "UInt32"), *columns), "MergeTree", ("k",), "events")


def test_every_type_the_ddl_emits_has_an_arrow_type() -> None:
    schema = arrow_schema(_table("t", [t for t, _ in TYPED]))
    assert schema is not None
    assert [f.name for f in schema] == ["k", *(f"c{i}" for i in range(len(TYPED)))]


@pytest.mark.parametrize("clickhouse", ["UUID", "Array(DateTime64(3, 'UTC'))", "IPv4"])
def test_a_table_with_an_unmapped_type_has_no_arrow_schema(clickhouse: str) -> None:
    assert arrow_schema(_table("t", ["String", clickhouse])) is None


def test_values_pyarrow_refuses_raise_a_conversion_error() -> None:
    schema = arrow_schema(_table("t", ["Int64"]))
    with pytest.raises(ArrowConversionError, match="column c0"):
        arrow_table(schema, [[1], ["not a number"]])


def test_arrow_inserts_store_what_native_inserts_store(tmp_path: Path) -> None:
    """The same columns through the sink's Arrow insert and clickhouse-connect's Native one
    (naive datetimes are local time in both)."""
    types = [t for t, _ in TYPED]
    columns = [list(range(4)), *(values for _, values in TYPED)]
    arrow, native = _table("by_arrow", types), _table("by_native", types)
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "arrow_test")
    try:
        target.ensure([arrow, native])
        target.insert_columns(arrow, columns, "arrow-1")
        target.insert_columns(arrow, columns, "arrow-1")  # the token: lands once
        client = target._connect()
        client.insert(
            native.name,
            columns,
            column_names=[c.name for c in native.columns],
            column_type_names=[c.type for c in native.columns],
            column_oriented=True,
            database="arrow_test",
        )
        _c, by_arrow = target.query("SELECT * FROM arrow_test.by_arrow ORDER BY k")
        _c, by_native = target.query("SELECT * FROM arrow_test.by_native ORDER BY k")
        assert len(by_arrow) == 4
        for row, expected in zip(by_arrow, by_native, strict=True):
            assert row == expected
    finally:
        target.close()


def test_columns_pyarrow_refuses_go_in_the_native_format(tmp_path: Path) -> None:
    table = _table("fallback", ["Decimal(12, 2)", DT3])
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "arrow_test")
    try:
        target.ensure([table])
        target.insert_columns(table, [[0, 1], [1.5, 2.25], [AT, BEFORE_EPOCH]], "fallback-1")
        _c, rows = target.query("SELECT * FROM arrow_test.fallback ORDER BY k")
        assert rows == [
            (0, Decimal("1.50"), AT.replace(microsecond=123000, tzinfo=None)),
            (1, Decimal("2.25"), dt.datetime(1969, 12, 31, 23, 59, 59, 999000)),
        ]
    finally:
        target.close()
