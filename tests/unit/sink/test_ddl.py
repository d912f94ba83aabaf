"""ClickHouse DDL for projections: the Avro mapping, names, tables and value conversion."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from topologies.retail.domain import StoreStock, retail

from streamfold.contracts.avro import avro_schema
from streamfold.contracts.results import CommandResult
from streamfold.domain import BoundedContext, Event, State
from streamfold.sink.ddl import (
    TableSpec,
    aggregate_tables,
    commands_view_sql,
    context_tables,
    projection_ddl,
)
from streamfold.sink.types import (
    Column,
    ProjectionSchemaError,
    clickhouse_type,
    column_value,
    row_converter,
)

pytestmark = pytest.mark.unit

DT3 = "DateTime64(3, 'UTC')"
DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
COLOUR = {"type": "enum", "name": "Colour", "symbols": ["red", "blue"]}
INNER = {"type": "record", "name": "Inner", "fields": [{"name": "label", "type": "string"}]}


@pytest.mark.parametrize(
    ("avro", "expected"),
    [
        ("string", "String"),
        ("boolean", "Bool"),
        ("int", "Int32"),
        ("long", "Int64"),
        ("float", "Float32"),
        ("double", "Float64"),
        ("bytes", "String"),
        ({"type": "long"}, "Int64"),
        ({"type": "fixed", "name": "F", "size": 16}, "FixedString(16)"),
        (COLOUR, "LowCardinality(String)"),
        (DECIMAL, "Decimal(12, 2)"),
        (
            {"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal", "precision": 18},
            "Decimal(18, 0)",
        ),
        ({"type": "string", "logicalType": "uuid"}, "UUID"),
        ({"type": "int", "logicalType": "date"}, "Date32"),
        ({"type": "int", "logicalType": "time-millis"}, "Int32"),
        ({"type": "long", "logicalType": "time-micros"}, "Int64"),
        ({"type": "long", "logicalType": "timestamp-millis"}, DT3),
        ({"type": "long", "logicalType": "local-timestamp-millis"}, DT3),
        ({"type": "long", "logicalType": "timestamp-micros"}, "DateTime64(6, 'UTC')"),
        ({"type": "string", "logicalType": "some-future-type"}, "String"),
        ({"type": "string", "logicalType": "date"}, "String"),  # wrong base: ignored
        ({"type": "array", "items": "long"}, "Array(Int64)"),
        ({"type": "map", "values": DECIMAL}, "Map(String, Decimal(12, 2))"),
        ({"type": "array", "items": ["null", "string"]}, "Array(Nullable(String))"),
        (INNER, "String"),
        (["string", "long"], "String"),
        (["long"], "Int64"),
    ],
)
def test_every_avro_type_maps_to_its_clickhouse_type(avro: Any, expected: str) -> None:
    assert clickhouse_type(avro) == expected


@pytest.mark.parametrize(
    ("avro", "expected"),
    [
        (["null", "string"], "Nullable(String)"),
        (["string", "null"], "Nullable(String)"),
        (["null", DECIMAL], "Nullable(Decimal(12, 2))"),
        (["null", {"type": "long", "logicalType": "timestamp-millis"}], f"Nullable({DT3})"),
        (["null", INNER], "Nullable(String)"),
        (["null", "string", "long"], "Nullable(String)"),
        # ClickHouse cannot wrap these in Nullable: null becomes empty instead.
        (["null", {"type": "array", "items": "long"}], "Array(Int64)"),
        (["null", {"type": "map", "values": "long"}], "Map(String, Int64)"),
        (["null", COLOUR], "LowCardinality(String)"),
    ],
)
def test_a_union_with_null_is_nullable_where_clickhouse_allows_it(avro: Any, expected: str) -> None:
    assert clickhouse_type(avro) == expected


def test_named_types_resolve_by_short_and_full_name() -> None:
    named = {"Colour": COLOUR, "io.x.Colour": COLOUR, "Inner": INNER}
    assert clickhouse_type("Colour", named) == "LowCardinality(String)"
    assert clickhouse_type(["null", "io.x.Colour"], named) == "LowCardinality(String)"
    assert clickhouse_type({"type": "array", "items": "Inner"}, named) == "Array(String)"
    schema = {
        "type": "record",
        "name": "Pair",
        "namespace": "io.x",
        "fields": [
            {"name": "first", "type": COLOUR},
            {"name": "second", "type": "Colour"},
            {"name": "third", "type": ["null", "io.x.Colour"]},
        ],
    }
    row = row_converter(schema)({"first": "red", "second": "blue", "third": None})
    assert row == ["red", "blue", ""]


@pytest.mark.parametrize(
    ("avro", "message"),
    [
        ("Missing", "unknown Avro type 'Missing'"),
        (["null"], "non-null branch"),
        ({"type": "bytes", "logicalType": "decimal", "precision": 80}, "precision 80"),
        ({"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 5}, "scale 5"),
        ({"type": "fixed", "name": "F"}, "fixed size None"),
    ],
)
def test_unmappable_avro_types_are_rejected(avro: Any, message: str) -> None:
    with pytest.raises(ProjectionSchemaError, match=message):
        clickhouse_type(avro)


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x; DROP TABLE y", "a`b", "1abc", "", "größe", "a b"])
def test_a_name_that_is_not_an_identifier_is_rejected(name: str) -> None:
    with pytest.raises(ProjectionSchemaError, match="not an identifier"):
        Column(name, "String")
    spec = context_tables(retail)[0]
    with pytest.raises(ProjectionSchemaError, match="not an identifier"):
        spec.create_sql(name)


@pytest.mark.parametrize(
    "ch_type", ["String; DROP TABLE y", "String) ENGINE = Log", "Nullable(", "Map(String,)", ""]
)
def test_a_type_outside_the_grammar_is_rejected(ch_type: str) -> None:
    with pytest.raises(ProjectionSchemaError, match="not a ClickHouse type"):
        Column("x", ch_type)


def test_a_malicious_field_name_names_the_model_and_field() -> None:
    schema = {
        "type": "record",
        "name": "Evil",
        "fields": [{"name": "x; DROP TABLE y", "type": "long"}],
    }
    with pytest.raises(ProjectionSchemaError, match=r"Evil: field: 'x; DROP TABLE y'"):
        row_converter(schema)


def test_a_field_named_like_a_platform_column_is_rejected() -> None:
    ctx = BoundedContext("clash", namespace="io.clash")

    class Counter(State):
        version: int

    ctx.aggregate("counter", state=Counter, id="version")
    with pytest.raises(ProjectionSchemaError, match=r"Counter\.version: the state table"):
        aggregate_tables(ctx, "counter")


def test_table_spec_checks_its_engine_and_order_by() -> None:
    columns = (Column("a", "String"),)
    with pytest.raises(ProjectionSchemaError, match="bad engine"):
        TableSpec("t", columns, "ReplacingMergeTree(b)", ("a",), "state")
    with pytest.raises(ProjectionSchemaError, match="ORDER BY"):
        TableSpec("t", columns, "MergeTree", ("b",), "state")
    with pytest.raises(ProjectionSchemaError, match="duplicate columns"):
        TableSpec("t", (*columns, *columns), "MergeTree", ("a",), "state")


# --- events --------------------------------------------------------------------------------


def events_context(*events: type[Event]) -> BoundedContext:
    ctx = BoundedContext("shop", namespace="io.shop")

    class Cart(State):
        cart_id: str

    cart = ctx.aggregate("cart", state=Cart, id="cart_id")
    for event in events:
        cart.evolves(event, creates=True)(lambda state, event: Cart(cart_id="c"))
    return ctx


def test_event_columns_are_the_union_of_the_event_types_fields() -> None:
    class Opened(Event):
        cart_id: str
        count: int
        tags: list[str]

    class Noted(Event):
        cart_id: str
        count: int | None = None
        note: str

    events = aggregate_tables(events_context(Opened, Noted), "cart")[2]
    assert [(c.name, c.type) for c in events.model_columns] == [
        ("cart_id", "String"),  # in every event, same type
        ("count", "Nullable(Int64)"),  # nullable in one
        ("tags", "Array(String)"),  # in one only, but Array cannot be Nullable
        ("note", "Nullable(String)"),  # in one only
    ]
    assert [c.name for c in events.columns[:6]] == [
        "tenant",
        "aggregate_id",
        "version",
        "event_type",
        "event_time",
        "command_id",
    ]
    assert [c.name for c in events.columns[-4:]] == ["payload", "_topic", "_partition", "_offset"]


def test_conflicting_event_field_types_name_both_events_and_the_field() -> None:
    class Opened(Event):
        cart_id: str
        size: str

    class Resized(Event):
        cart_id: str
        size: int

    with pytest.raises(
        ProjectionSchemaError, match=r"field 'size' is String in Opened but Int64 in Resized"
    ):
        aggregate_tables(events_context(Opened, Resized), "cart")


def test_soft_delete_events_keep_their_aggregate_id_in_the_platform_column() -> None:
    events = aggregate_tables(retail, "item")[2]
    assert [c.name for c in events.columns].count("aggregate_id") == 1
    assert ("reason", "Nullable(String)") in [(c.name, c.type) for c in events.columns]


# --- the retail context ----------------------------------------------------------------------


def test_retail_ddl_has_every_table_with_its_engine_and_order() -> None:
    sql = projection_ddl(retail, "analytics")
    assert sql.startswith("-- Generated by `streamfold projections ddl`")
    statements = sql.split(";\n\n")
    aggregates = ("supplier", "item", "store_stock", "purchase_order", "purchase", "invoice")
    assert [a.name for a in retail.aggregates] == list(aggregates)
    assert len(statements) == len(aggregates) * 3 + 2 + 1
    for aggregate in aggregates:
        name = f"`analytics`.`retail_{aggregate}"
        last = next(s for s in statements if f"{name}_state_last`" in s)
        assert "ENGINE = ReplacingMergeTree(`version`, `deleted`)" in last
        assert "ORDER BY (`tenant`, `aggregate_id`)\n" in last
        for table in ("state", "events"):
            text = next(s for s in statements if f"{name}_{table}`\n" in s)
            assert "ENGINE = MergeTree\nORDER BY (`tenant`, `aggregate_id`, `version`)" in text
    for table in ("command_log", "command_results"):
        text = next(s for s in statements if f"`analytics`.`retail_{table}`\n" in s)
        assert "ENGINE = MergeTree\nORDER BY (`command_id`)" in text
    assert sql.count("SETTINGS non_replicated_deduplication_window = 10000") == 6 * 3 + 2
    assert statements[-1].startswith("CREATE VIEW IF NOT EXISTS `analytics`.`retail_commands` AS")
    assert sql.endswith(";\n")


def test_retail_state_tables_have_the_platform_then_the_model_columns() -> None:
    last, history, _ = aggregate_tables(retail, retail.get("store_stock"))
    assert last.columns == history.columns
    assert [(c.name, c.type) for c in last.columns] == [
        ("tenant", "LowCardinality(String)"),
        ("aggregate_id", "String"),
        ("version", "UInt64"),
        ("deleted", "UInt8"),
        ("updated_at", DT3),
        ("command_id", "String"),
        ("store_id", "String"),
        ("item_id", "String"),
        ("on_hand", "Int64"),
        ("sold_amount", "Decimal(12, 2)"),
        ("supplier_id", "Nullable(String)"),
        ("reorder_point", "Int64"),
        ("reorder_quantity", "Int64"),
        ("lead_time_seconds", "Int64"),
        ("_topic", "LowCardinality(String)"),
        ("_partition", "UInt32"),
        ("_offset", "UInt64"),
    ]
    assert (last.kind, last.aggregate, history.kind) == ("state_last", "store_stock", "state")


def test_command_results_table_covers_every_command_result_field_it_projects() -> None:
    results = {c.name for c in context_tables(retail)[1].columns}
    assert set(CommandResult.model_fields) - results == {"request_id"}  # from the command log


def test_commands_view_joins_results_to_the_command_log() -> None:
    sql = commands_view_sql(retail, "db")
    assert "FROM `db`.`retail_command_results` AS r\n" in sql
    assert "LEFT JOIN `db`.`retail_command_log` AS l USING (`command_id`)" in sql
    assert "dateDiff('millisecond', l.`issued_at`, r.`processed_at`) AS `latency_ms`" in sql


def test_add_column_sql_adds_a_new_optional_field() -> None:
    spec = aggregate_tables(retail, "item")[0]
    sql = spec.add_column_sql("db", Column("discount", "Nullable(Decimal(5, 2))"))
    assert sql == (
        "ALTER TABLE `db`.`retail_item_state_last` "
        "ADD COLUMN IF NOT EXISTS `discount` Nullable(Decimal(5, 2))"
    )


# --- values --------------------------------------------------------------------------------

AT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("avro", "value", "expected"),
    [
        ("string", "a", "a"),
        ("bytes", b"\x00\xff", b"\x00\xff"),
        ("long", 7, 7),
        (DECIMAL, Decimal("1.20"), Decimal("1.20")),
        ({"type": "string", "logicalType": "uuid"}, uuid.UUID(int=1), str(uuid.UUID(int=1))),
        ({"type": "string", "logicalType": "uuid"}, "a-uuid", "a-uuid"),
        ({"type": "int", "logicalType": "time-millis"}, dt.time(1, 2, 3, 4000), 3_723_004),
        ({"type": "long", "logicalType": "time-micros"}, dt.time(0, 0, 1, 5), 1_000_005),
        ({"type": "long", "logicalType": "timestamp-millis"}, AT, AT),
        (
            {"type": "long", "logicalType": "local-timestamp-millis"},
            AT.replace(tzinfo=None),
            AT,
        ),
        ({"type": "int", "logicalType": "date"}, AT.date(), AT.date()),
        (INNER, {"label": "x", "at": AT}, '{"at":"' + AT.isoformat() + '","label":"x"}'),
        (["string", "long"], 5, "5"),
        (["null", "string"], None, None),
        (["null", INNER], None, None),
        (["null", {"type": "array", "items": "long"}], None, []),
        (["null", {"type": "map", "values": "long"}], None, {}),
        (["null", COLOUR], None, ""),
        ({"type": "array", "items": INNER}, [{"label": "x"}], ['{"label":"x"}']),
        ({"type": "map", "values": ["null", DECIMAL]}, {"a": None}, {"a": None}),
        (
            {"type": "map", "values": {"type": "int", "logicalType": "time-millis"}},
            {"a": dt.time(0, 0, 2)},
            {"a": 2000},
        ),
    ],
)
def test_column_value_converts_what_fastavro_decodes(avro: Any, value: Any, expected: Any) -> None:
    assert column_value(avro, value) == expected


def test_row_converter_fills_the_target_columns_in_order() -> None:
    schema = {
        "type": "record",
        "name": "Result",
        "fields": [
            {"name": "code", "type": ["null", "string"]},
            {"name": "event_types", "type": {"type": "array", "items": "string"}},
            {"name": "meta", "type": INNER},
        ],
    }
    columns = [
        Column("meta", "String"),
        Column("code", "String"),  # not nullable here: null becomes ''
        Column("absent", "Nullable(Int64)"),
        Column("tags", "Array(String)"),
        Column("event_types", "Array(String)"),
    ]
    convert = row_converter(schema, columns)
    assert convert({"code": None, "event_types": ["A"], "meta": {"label": "m"}}) == [
        '{"label":"m"}',
        "",
        None,
        [],
        ["A"],
    ]
    assert convert({"code": "x", "event_types": [], "meta": {"label": "n"}})[1] == "x"


# --- the real engine -------------------------------------------------------------------------


def test_the_retail_ddl_runs_on_embedded_clickhouse(tmp_path: Path) -> None:
    pytest.importorskip("chdb")
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    client = clickhouse_connect.get_client(dsn=f"chdb:///{tmp_path}/ch")
    client.command("CREATE DATABASE IF NOT EXISTS retail_test")
    script = projection_ddl(retail, "retail_test")
    for statement in script.removesuffix(";\n").split(";\n\n"):
        client.command(statement)
    client.command(script.split(";\n\n")[0])  # IF NOT EXISTS: running it again is harmless

    last = aggregate_tables(retail, "store_stock")[0]
    model = row_converter(avro_schema(StoreStock, retail.namespace), last.model_columns)
    state = StoreStock(
        store_id="s1",
        item_id="apple",
        on_hand=3,
        sold_amount=Decimal("1.20"),
        supplier_id="acme",
        reorder_point=5,
        reorder_quantity=20,
        lead_time_seconds=7200,
    ).model_dump()
    row = ["t", "s1/apple", 2, 0, AT, "c-1", *model(state), "retail.store_stock.state", 0, 41]
    client.insert(
        "retail_test.retail_store_stock_state_last",
        [row],
        column_names=[c.name for c in last.columns],
    )
    got = client.query(
        "SELECT aggregate_id, version, on_hand, sold_amount, toUnixTimestamp64Milli(updated_at), "
        "supplier_id, reorder_point FROM retail_test.retail_store_stock_state_last FINAL"
    ).result_rows
    at_ms = int(AT.timestamp() * 1000)
    assert got == [("s1/apple", 2, 3, Decimal("1.20"), at_ms, "acme", 5)]

    log, results = context_tables(retail)
    client.insert(
        "retail_test.retail_command_log",
        [["c-1", "RecordSale", "store_stock", "s1/apple", "t", "pos", "r-1", AT, "{}", "x", 0, 1]],
        column_names=[c.name for c in log.columns],
    )
    done = AT + dt.timedelta(milliseconds=1500)
    result = ["store_stock", "", "", "accepted", 2, [], "", "", 0, done, "", "", "x", 0, 1]
    client.insert(
        "retail_test.retail_command_results",
        [["c-1", *result], ["c-2", *result]],
        column_names=[c.name for c in results.columns],
    )
    audit = client.query(
        "SELECT command_id, command_type, tenant, request_id, latency_ms "
        "FROM retail_test.retail_commands ORDER BY command_id"
    ).result_rows
    assert audit == [("c-1", "RecordSale", "t", "r-1", 1500), ("c-2", "", "", None, None)]
