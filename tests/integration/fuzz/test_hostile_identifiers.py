"""Hostile identifiers through DDL generation and the query side, on the real engine (chDB).

A model or field name reaches SQL as a ClickHouse table or column name: the Avro schema
generated from the model names the columns, the context and aggregate names the tables.
Such a name is either refused with an error naming it (when the schema or the tables are
made) or, if it is an identifier, backquoted so the SQL is exactly what was meant; values
(an aggregate id, a query parameter) are bound server-side and never become SQL text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import create_model

from streamfold.contracts import AvroCodec, InMemorySchemaRegistry
from streamfold.domain import BoundedContext, Command, Event, State
from streamfold.errors import ConfigurationError
from streamfold.gateway.reads import ClickHouseReader
from streamfold.sink.ddl import TableSpec, aggregate_tables, context_tables, qualified_table
from streamfold.sink.named_queries import NamedQuery, QueryParameter
from streamfold.sink.target import ClickHouseTarget
from streamfold.sink.types import Column, ProjectionSchemaError

pytestmark = pytest.mark.integration

NAMESPACE = "io.streamfold.hostile"
HOSTILE = [
    'say"hi',  # a double quote
    "it's",  # a single quote
    "a`b",  # a backtick
    "x`; DROP TABLE t; --",  # a way out of a backquoted name
    "a;b",  # a semicolon
    "a b",  # a space
    "a-b",
    "é",  # Unicode letters are Python identifiers, not Avro or SQL ones
    "名前",
    "ﬁeld",  # NFKC folds it to "field"
    "a\u200bb",  # a zero-width space
    "ok\n",  # "$" matches before a final newline
    "1st",
    "",
]
#: Identifiers that are SQL words or look odd: valid, so they must come out backquoted.
TRICKY = [
    "select",
    "from",
    "where",
    "FINAL",
    "order",
    "Null",
    "group",
    "limit",
    "default",
    "format",
]


def context_with(
    state_fields: dict[str, Any],
    event_fields: dict[str, Any] | None = None,
    state_name: str = "Thing",
    event_name: str = "ThingHappened",
) -> BoundedContext:
    """A context with one aggregate ``thing`` whose models carry the given fields."""
    context = BoundedContext("hostile", namespace=NAMESPACE)
    state = create_model(state_name, __base__=State, thing_id=(str, ...), **state_fields)
    event = create_model(event_name, __base__=Event, thing_id=(str, ...), **(event_fields or {}))
    command = create_model("DoThing", __base__=Command, thing_id=(str, ...))
    thing = context.aggregate("thing", state=state, id="thing_id")
    thing.decides(command, creates=True)(lambda s, c: event.model_validate(c.model_dump()))
    thing.evolves(event, creates=True)(lambda s, e: state.model_validate(e.model_dump()))
    return context


def refused(make: Callable[[], Any], name: str) -> ConfigurationError:
    """``make()`` must raise a ConfigurationError whose message names ``name``."""
    with pytest.raises(ConfigurationError) as caught:
        make()
    assert repr(name) in str(caught.value), caught.value
    return caught.value


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_state_field_name_is_refused_before_any_sql(name: str) -> None:
    context = context_with({name: (str, "")})
    refused(lambda: aggregate_tables(context, "thing"), name)
    codec = AvroCodec(InMemorySchemaRegistry())
    state_type = context.get("thing").state_type
    refused(lambda: codec.writer("hostile.thing.state", state_type, NAMESPACE), name)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_event_field_name_is_refused_before_any_sql(name: str) -> None:
    context = context_with({}, {name: (int, 0)})
    refused(lambda: aggregate_tables(context, "thing"), name)


@pytest.mark.parametrize("name", [n for n in HOSTILE if n])
def test_a_hostile_model_name_is_refused_before_any_sql(name: str) -> None:
    refused(lambda: aggregate_tables(context_with({}, state_name=name), "thing"), name)
    refused(lambda: aggregate_tables(context_with({}, event_name=name), "thing"), name)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_context_aggregate_table_and_column_names_are_refused(name: str) -> None:
    refused(lambda: BoundedContext(name, namespace=NAMESPACE), name)
    context = BoundedContext("hostile", namespace=NAMESPACE)
    plain = create_model("Plain", __base__=State, thing_id=(str, ...))
    refused(lambda: context.aggregate(name, state=plain, id="thing_id"), name)
    refused(lambda: Column(name, "String"), name)
    (log_table, *_) = context_tables(context)
    refused(lambda: log_table.create_sql(name), name)
    refused(lambda: qualified_table("db", name), name)


@pytest.mark.parametrize("name", [n for n in HOSTILE if n])  # "" + "_state" is an identifier
def test_the_read_side_builds_no_sql_from_a_hostile_database_or_table_name(name: str) -> None:
    """The gateway's state reads check both names before any SQL is built."""
    reader = ClickHouseReader("chdb://memory", name)
    refused(lambda: asyncio.run(reader.state("hostile_thing", "id", None, None)), name)
    reader = ClickHouseReader("chdb://memory", "hostile")
    refused(lambda: asyncio.run(reader.state(name, "id", None, None)), f"{name}_state_last")
    refused(lambda: asyncio.run(reader.state(name, "id", None, 3)), f"{name}_state")


#: Values that would change the SQL if they were ever formatted into it.
HOSTILE_VALUES = [*HOSTILE, "' OR 1=1 --", "{id:String}", "\\'; DROP DATABASE hostile; --"]
UPDATED = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def state_row(table: TableSpec, values: dict[str, Any]) -> list[Any]:
    defaults = {"tenant": "", "version": 1, "deleted": 0, "updated_at": UPDATED}
    defaults |= {"command_id": "c", "_topic": "t", "_partition": 0, "_offset": 0}
    return [values.get(c.name, defaults.get(c.name)) for c in table.columns]


def test_sql_words_as_field_names_and_hostile_values_are_read_back_exactly(
    tmp_path: Path,
) -> None:
    """Columns named ``select``, ``from``, ``FINAL``… are created, written and read by name;
    every hostile aggregate id and query parameter finds its own row and nothing else."""
    context = context_with({n: (str, "") for n in TRICKY}, {n: (int, 0) for n in TRICKY})
    tables = aggregate_tables(context, "thing")
    assert {c.name for c in tables[0].columns} >= set(TRICKY)
    assert {c.name for c in tables[2].columns} >= set(TRICKY)
    target = f"chdb:{tmp_path / 'ch'}"
    writer = ClickHouseTarget(target, "hostile")
    try:
        assert writer.ensure(tables) == []
        for table in tables[:2]:  # state_last and the state history
            rows = []
            for n, value in enumerate(HOSTILE_VALUES):
                fields = {w: f"{w}:{value}" for w in TRICKY} | {"aggregate_id": value}
                rows.append(state_row(table, {**fields, "thing_id": value, "_offset": n}))
            writer.insert(table, rows, f"{table.name}-1")
    finally:
        writer.close()
    reader = ClickHouseReader(target, "hostile")
    query = NamedQuery(
        name="by_where",
        title="rows by the column named where",
        sql="SELECT `aggregate_id`, `select`, `FINAL` FROM `hostile`.`hostile_thing_state` "
        "WHERE `where` = {w:String} ORDER BY `_offset`",
        parameters=(QueryParameter("w", "String"),),
    )
    for value in HOSTILE_VALUES:
        row = asyncio.run(reader.state("hostile_thing", value, None, None))
        assert row is not None, value
        assert {w: row[w] for w in TRICKY} == {w: f"{w}:{value}" for w in TRICKY}
        assert row["thing_id"] == row["aggregate_id"] == value
        at_version = asyncio.run(reader.state("hostile_thing", value, None, 1))
        assert at_version is not None and at_version["select"] == f"select:{value}"
        columns, found, cut = asyncio.run(reader.run(query, {"w": f"where:{value}"}, None))
        assert (columns, cut) == (["aggregate_id", "select", "FINAL"], False)
        assert [list(r) for r in found] == [[value, f"select:{value}", f"FINAL:{value}"]]
    assert asyncio.run(reader.state("hostile_thing", "absent", None, None)) is None
    # Nothing was dropped or rewritten on the way.
    _columns, counts = asyncio.run(
        reader.query("SELECT count() FROM `hostile`.`hostile_thing_state`", {}, reader.settings())
    )
    assert counts[0][0] == len(HOSTILE_VALUES)


def test_ensure_refuses_a_hostile_database_name_before_running_any_sql(tmp_path: Path) -> None:
    context = context_with({})
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "sneaky` --")
    try:
        with pytest.raises(ProjectionSchemaError):
            target.ensure(aggregate_tables(context, "thing"))
        _columns, rows = target.query("SELECT name FROM system.databases")
    finally:
        target.close()
    assert "sneaky" not in {row[0] for row in rows}
