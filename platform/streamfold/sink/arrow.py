"""Columns of a projection table as an Arrow table, the format the sink inserts in.

clickhouse-connect serialises Python values to ClickHouse's Native format in Python, value
by value; ``insert_arrow`` hands ClickHouse an Arrow IPC stream that pyarrow builds from the
same lists in C, and ClickHouse (chDB or a server over HTTP, the same call) converts it to
the table's types. On the sink's events that halves the cost of an insert
(``benchmarks/sink_bench.py``).

The Arrow types follow the ClickHouse types of :mod:`streamfold.sink.ddl`; those of the
Avro types are in the type table of :mod:`streamfold.sink.types`:

================================  ==========================================================
ClickHouse                        Arrow (values)
================================  ==========================================================
``String``                        ``binary`` (str or bytes)
``FixedString(n)``                ``fixed_size_binary(n)``
``Bool``, ``[U]Int8..64``         ``bool``, ``[u]int8..64``
``Float32`` / ``Float64``         ``float32`` / ``float64``
``Decimal(p, s)``                 ``decimal128(p, s)`` (``decimal256`` above 38 digits)
``Date32``                        ``date32`` (date)
``DateTime64(3|6, 'UTC')``        ``timestamp(ms|us, UTC)`` (ticks, or datetimes converted
                                  to ticks exactly as clickhouse-connect converts them)
``Array(T)``, ``Map(String, T)``  ``list<T>``, ``map<binary, T>`` (T not temporal)
``Nullable(T)``                   T with nulls; ``LowCardinality(T)``: T
================================  ==========================================================

:func:`arrow_schema` returns None for a table with any other type (``UUID``, say): such a
table is inserted in the Native format, as are columns whose values pyarrow refuses
(:class:`ArrowConversionError`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information

from streamfold.sink.ddl import TableSpec
from streamfold.sink.types import LEAVES

__all__ = ["ArrowConversionError", "arrow_schema", "arrow_table"]


def _pyarrow(name: str) -> Any:
    """The pyarrow type the type table names: a factory of pyarrow, or ``timestamp[unit]``."""
    if name.startswith("timestamp["):
        return pa.timestamp(name[len("timestamp[") : -1], tz="UTC")
    return getattr(pa, name)()


def _scalars() -> dict[str, Any]:
    """The Arrow type of each ClickHouse type of the type table, and of the integer types
    of the platform's own columns (version, partition, offset, flags)."""
    scalars: dict[str, Any] = {
        f"{sign}Int{bits}": getattr(pa, f"{sign.lower()}int{bits}")()
        for sign in ("", "U")
        for bits in (8, 16, 32, 64)
    }
    for leaf in LEAVES.values():
        if leaf.arrow is None or leaf.clickhouse.startswith("LowCardinality("):
            continue
        arrow = _pyarrow(leaf.arrow)
        if scalars.setdefault(leaf.clickhouse, arrow) != arrow:
            raise AssertionError(f"{leaf.clickhouse} has two Arrow types in the type table")
    return scalars


_SCALARS = _scalars()
_DECIMAL = re.compile(r"Decimal\((\d+), (\d+)\)")
_FIXED = re.compile(r"FixedString\((\d+)\)")
_MAX_DECIMAL128 = 38
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ArrowConversionError(ValueError):
    """pyarrow refused a column's values (the caller inserts them in the Native format)."""


def _inner(clickhouse: str, prefix: str) -> str | None:
    return clickhouse[len(prefix) : -1] if clickhouse.startswith(prefix) else None


def _arrow_type(clickhouse: str, *, nested: bool = False) -> Any:
    """The Arrow type of a ClickHouse type, or None if the sink does not map it."""
    for wrapper in ("Nullable(", "LowCardinality("):
        inner = _inner(clickhouse, wrapper)
        if inner is not None:
            return _arrow_type(inner, nested=nested)
    if clickhouse in _SCALARS:
        scalar = _SCALARS[clickhouse]
        return None if nested and pa.types.is_timestamp(scalar) else scalar
    if match := _DECIMAL.fullmatch(clickhouse):
        precision, scale = int(match.group(1)), int(match.group(2))
        if precision <= _MAX_DECIMAL128:
            return pa.decimal128(precision, scale)
        return pa.decimal256(precision, scale)
    if match := _FIXED.fullmatch(clickhouse):
        return pa.binary(int(match.group(1)))
    items = _inner(clickhouse, "Array(")
    if items is not None:
        item = _arrow_type(items, nested=True)
        return None if item is None else pa.list_(item)
    values = _inner(clickhouse, "Map(String, ")
    if values is not None:
        value = _arrow_type(values, nested=True)
        return None if value is None else pa.map_(pa.binary(), value)
    return None


def arrow_schema(table: TableSpec) -> Any:
    """The Arrow schema of ``table``'s columns, or None if a column type has no mapping.

    It converts an empty column too: pyarrow imports pandas on its first conversion, a
    second better spent while the tables are created than in the first batch.
    """
    types = [_arrow_type(c.type) for c in table.columns]
    if any(t is None for t in types):
        return None
    pa.array([], type=types[0])
    return pa.schema([pa.field(c.name, t) for c, t in zip(table.columns, types, strict=True)])


def _ticks(value: Any, per_second: int) -> Any:
    """A datetime as DateTime64 ticks (anything else as it is), as clickhouse-connect
    computes them: an aware datetime exactly, from its distance to the epoch; a naive one
    as local time."""
    if not isinstance(value, dt.datetime):
        return value
    if value.tzinfo is not None:
        since = value - _EPOCH
        micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
        return micros * per_second // 1_000_000
    seconds = math.floor(value.timestamp())
    return ((seconds * 1_000_000 + value.microsecond) * per_second) // 1_000_000


def _first(column: Sequence[Any]) -> Any:
    return next((v for v in column if v is not None), None)


def arrow_table(schema: Any, columns: Sequence[Sequence[Any]]) -> Any:
    """An Arrow table of ``schema`` (:func:`arrow_schema`) holding ``columns``."""
    arrays = []
    for field, column in zip(schema, columns, strict=True):
        values = column
        if pa.types.is_timestamp(field.type) and not isinstance(_first(column), int):
            per_second = 1000 if field.type.unit == "ms" else 1_000_000
            values = [_ticks(v, per_second) for v in column]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise ArrowConversionError(f"column {field.name}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)
