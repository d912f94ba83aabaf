"""The one type table: the DDL, the Python path, the framed path and Arrow agree on it."""

from __future__ import annotations

from typing import Any

import pytest

from streamfold.sink import arrow, types
from streamfold.sink.types import LEAVES, clickhouse_type, file_type

pytestmark = pytest.mark.unit


def _schema(name: str) -> Any:
    """The Avro schema of a row of the table: a primitive, a named kind, or a logical type."""
    leaf = LEAVES[name]
    if leaf.base is not None:
        return {"type": leaf.base, "logicalType": name}
    if name == "enum":
        return {"type": "enum", "name": "Colour", "symbols": ["red"]}
    if name == "record":
        return {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}
    return name


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_the_ddl_and_the_framed_path_read_a_type_from_its_row(name: str) -> None:
    leaf = LEAVES[name]
    assert clickhouse_type(_schema(name)) == leaf.clickhouse
    framed = file_type(_schema(name), {})
    if leaf.file is None:
        assert framed is None
    else:
        assert framed is not None
        assert (framed.clickhouse, framed.json) == (leaf.file, leaf.json)


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_arrow_maps_a_column_of_the_type_exactly_when_its_row_names_an_arrow_type(
    name: str,
) -> None:
    leaf = LEAVES[name]
    mapped = arrow._arrow_type(leaf.clickhouse)
    assert (mapped is not None) == (leaf.arrow is not None)


def test_a_timestamp_in_an_array_has_no_arrow_type() -> None:
    """pyarrow would convert the datetimes of a nested list in local time."""
    assert arrow._arrow_type("Array(DateTime64(3, 'UTC'))") is None
    assert arrow._arrow_type("Array(Date32)") is not None


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_the_module_documents_every_row(name: str) -> None:
    assert f"``{name}``" in (types.__doc__ or "")


def test_a_nullable_framed_type_spells_null() -> None:
    framed = file_type(["null", "long"], {})
    assert framed is not None
    assert framed.clickhouse == "Nullable(Int64)"
    assert framed.json == "if(isNull({x}), 'null', toString(assumeNotNull({x})))"


def test_a_logical_type_on_another_base_falls_back_to_the_base() -> None:
    assert clickhouse_type({"type": "long", "logicalType": "uuid"}) == "Int64"
    assert file_type({"type": "long", "logicalType": "uuid"}, {}) == file_type("long", {})
