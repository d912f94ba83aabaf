"""ClickHouse DDL for the projections of a bounded context, derived from its Avro schemas.

Tables, per aggregate ``<agg>`` of context ``<ctx>`` and per context:

=============================  ===============================================  ==============
table                          engine                                           ORDER BY
=============================  ===============================================  ==============
``<ctx>_<agg>_state_last``     ``ReplacingMergeTree(version, deleted)``         tenant, id
``<ctx>_<agg>_state``          ``MergeTree`` (every version)                    tenant, id, v
``<ctx>_<agg>_events``         ``MergeTree``                                    tenant, id, v
``<ctx>_command_log``          ``MergeTree`` (every decodable command)          command_id
``<ctx>_command_results``      ``MergeTree`` (one row per result)               command_id
``<ctx>_commands``             VIEW: results LEFT JOIN command_log              \\-
=============================  ===============================================  ==============

``state_last`` keeps the latest version of each aggregate only after merges: query it with
``FINAL``, which also hides rows whose ``deleted`` is 1 (soft-deleted aggregates). Every
state and events table has one typed column per top-level field of the model's Avro record;
an events table has the union of its event types' fields (nullable unless every event type
has the field with the same type) and the whole event as JSON in ``payload``.

Every MergeTree table is created with ``non_replicated_deduplication_window = 10000``:
without it a non-replicated table keeps no insert hashes, so the ``insert_deduplication_token``
a sink sends to make a retried batch idempotent is silently ignored.

Each typed column's type comes from the type table of :mod:`streamfold.sink.types`.

Every table and column name must be an identifier (``[A-Za-z_][A-Za-z0-9_]*``) and is emitted
backquoted; every type is checked against ClickHouse's type grammar. No SQL is built from an
unchecked string: a bad name raises :class:`ProjectionSchemaError` naming the model and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from streamfold.contracts.avro import avro_schema
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import AggregateDeleted, AggregateRecovered
from streamfold.sink.types import (
    DT3,
    Column,
    ProjectionSchemaError,
    identifier,
    nullable_type,
    quoted_identifier,
    record_fields,
    strip_nullable,
    widen,
)

__all__ = [
    "TableKind",
    "TableSpec",
    "aggregate_tables",
    "commands_view_sql",
    "context_tables",
    "projection_ddl",
    "qualified_table",
]

TableKind = Literal["state_last", "state", "events", "command_log", "command_results"]

DEDUPLICATION_WINDOW = 10_000
_ENGINE = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\(([A-Za-z_]\w*(?:, [A-Za-z_]\w*)*)\))?", re.ASCII)


@dataclass(frozen=True)
class TableSpec:
    """One projection table; render it with :meth:`create_sql`."""

    name: str
    columns: tuple[Column, ...]
    engine: str
    order_by: tuple[str, ...]
    kind: TableKind
    aggregate: str | None = None

    def __post_init__(self) -> None:
        identifier(self.name, "table")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ProjectionSchemaError(f"table {self.name}: duplicate columns {duplicates}")
        match = _ENGINE.fullmatch(self.engine)
        args = match.group(2).split(", ") if match and match.group(2) else []
        if match is None or not set(args) <= set(names):
            raise ProjectionSchemaError(f"table {self.name}: bad engine {self.engine!r}")
        if not self.order_by or not set(self.order_by) <= set(names):
            raise ProjectionSchemaError(f"table {self.name}: ORDER BY {self.order_by} not columns")

    @property
    def model_columns(self) -> tuple[Column, ...]:
        """The typed columns from the model's fields (those between the fixed columns)."""
        fixed = {c.name for c in (*_FIXED_HEAD[self.kind], *_FIXED_TAIL[self.kind])}
        return tuple(c for c in self.columns if c.name not in fixed)

    def create_sql(self, database: str) -> str:
        """``CREATE TABLE IF NOT EXISTS `database`.`name` (...) ENGINE ... SETTINGS ...``."""
        match = _ENGINE.fullmatch(self.engine)
        assert match is not None  # checked in __post_init__
        engine = match.group(1)
        if match.group(2):
            engine += f"({', '.join(quoted_identifier(a) for a in match.group(2).split(', '))})"
        columns = ",\n".join(f"    {c.sql()}" for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {qualified_table(database, self.name)}\n(\n{columns}\n)\n"
            f"ENGINE = {engine}\n"
            f"ORDER BY ({', '.join(quoted_identifier(c) for c in self.order_by)})\n"
            f"SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        )

    def qualified(self, database: str) -> str:
        """```database`.`name```, checked and quoted."""
        return qualified_table(database, self.name)

    def add_column_sql(self, database: str, column: Column) -> str:
        """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, for a field a model gained."""
        table = qualified_table(database, self.name)
        return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.sql()}"


def qualified_table(database: str, name: str) -> str:
    """```database`.`name```: both checked identifiers (else :class:`ProjectionSchemaError`)."""
    return f"{quoted_identifier(database, 'database')}.{quoted_identifier(name)}"


# --- tables -------------------------------------------------------------------------------

_LC = "LowCardinality(String)"
_KAFKA = (Column("_topic", _LC), Column("_partition", "UInt32"), Column("_offset", "UInt64"))
_STATE_HEAD = (
    Column("tenant", _LC),
    Column("aggregate_id", "String"),
    Column("version", "UInt64"),
    Column("deleted", "UInt8"),
    Column("updated_at", DT3),
    Column("command_id", "String"),
)
_EVENTS_HEAD = (
    Column("tenant", _LC),
    Column("aggregate_id", "String"),
    Column("version", "UInt64"),
    Column("event_type", _LC),
    Column("event_time", DT3),
    Column("command_id", "String"),
)
_COMMAND_LOG = (
    Column("command_id", "String"),
    Column("command_type", _LC),
    Column("aggregate_type", _LC),
    Column("aggregate_id", "String"),
    Column("tenant", _LC),
    Column("principal", "String"),
    Column("request_id", "String"),
    Column("issued_at", DT3),
    Column("payload", "String"),
)
_COMMAND_RESULTS = (
    Column("command_id", "String"),
    Column("aggregate_type", _LC),
    Column("aggregate_id", "String"),
    Column("command_type", _LC),
    Column("outcome", _LC),
    Column("version", "UInt64"),
    Column("event_types", "Array(String)"),
    Column("code", "String"),
    Column("message", "String"),
    Column("duplicate", "UInt8"),
    Column("processed_at", DT3),
    Column("tenant", _LC),
    Column("principal", "String"),
)
_FIXED_HEAD: dict[str, tuple[Column, ...]] = {
    "state_last": _STATE_HEAD,
    "state": _STATE_HEAD,
    "events": _EVENTS_HEAD,
    "command_log": _COMMAND_LOG,
    "command_results": _COMMAND_RESULTS,
}
_FIXED_TAIL: dict[str, tuple[Column, ...]] = {
    "state_last": _KAFKA,
    "state": _KAFKA,
    "events": (Column("payload", "String"), *_KAFKA),
    "command_log": _KAFKA,
    "command_results": _KAFKA,
}
# Fields of the built-in soft-delete events that are the platform's own column.
_PLATFORM_FIELDS: tuple[tuple[type[BaseModel], tuple[str, ...]], ...] = (
    (AggregateDeleted, ("aggregate_id",)),
    (AggregateRecovered, ("aggregate_id",)),
)


def _model_columns(
    context: BoundedContext, model: type[BaseModel], kind: TableKind
) -> list[Column]:
    """The model's typed columns, one per top-level field of its Avro record."""
    skip = next((names for base, names in _PLATFORM_FIELDS if issubclass(model, base)), ())
    fixed = {c.name for c in (*_FIXED_HEAD[kind], *_FIXED_TAIL[kind])}
    columns: list[Column] = []
    for name, mapped in record_fields(avro_schema(model, context.namespace), skip):
        if name in fixed:
            raise ProjectionSchemaError(
                f"{model.__name__}.{name}: the {kind} table already has a column {name!r}; "
                "rename the field"
            )
        columns.append(Column(name, mapped.type))
    return columns


def _event_columns(context: BoundedContext, aggregate: Aggregate[Any]) -> list[Column]:
    """The union of the fields of every event type: nullable unless in all with one type."""
    per_event = [
        (event.__name__, {c.name: c for c in _model_columns(context, event, "events")})
        for event in aggregate.events
    ]
    order = list(dict.fromkeys(name for _, fields in per_event for name in fields))
    columns: list[Column] = []
    for name in order:
        seen = [(event, fields[name].type) for event, fields in per_event if name in fields]
        first_event, first_type = seen[0]
        merged = strip_nullable(first_type)
        for event, ch_type in seen[1:]:
            widened = widen(merged, strip_nullable(ch_type))
            if widened is None:
                raise ProjectionSchemaError(
                    f"{aggregate.name} events: field {name!r} is {first_type} in {first_event} "
                    f"but {ch_type} in {event}; rename one of them"
                )
            merged = widened
        uniform = len(seen) == len(per_event) and all(t == first_type for _, t in seen)
        nullable = nullable_type(merged)
        columns.append(Column(name, first_type if uniform else nullable))
    return columns


def _aggregate(context: BoundedContext, aggregate: Aggregate[Any] | str) -> Aggregate[Any]:
    return context.get(aggregate) if isinstance(aggregate, str) else aggregate


def aggregate_tables(context: BoundedContext, aggregate: Aggregate[Any] | str) -> list[TableSpec]:
    """The ``state_last``, ``state`` and ``events`` tables of one aggregate of ``context``."""
    agg = _aggregate(context, aggregate)
    prefix = f"{context.name}_{agg.name}"
    state = tuple(_model_columns(context, agg.state_type, "state"))
    events = tuple(_event_columns(context, agg))
    return [
        TableSpec(
            name=f"{prefix}_state_last",
            columns=(*_STATE_HEAD, *state, *_KAFKA),
            engine="ReplacingMergeTree(version, deleted)",
            order_by=("tenant", "aggregate_id"),
            kind="state_last",
            aggregate=agg.name,
        ),
        TableSpec(
            name=f"{prefix}_state",
            columns=(*_STATE_HEAD, *state, *_KAFKA),
            engine="MergeTree",
            order_by=("tenant", "aggregate_id", "version"),
            kind="state",
            aggregate=agg.name,
        ),
        TableSpec(
            name=f"{prefix}_events",
            columns=(*_EVENTS_HEAD, *events, *_FIXED_TAIL["events"]),
            engine="MergeTree",
            order_by=("tenant", "aggregate_id", "version"),
            kind="events",
            aggregate=agg.name,
        ),
    ]


def context_tables(context: BoundedContext) -> list[TableSpec]:
    """The ``command_log`` and ``command_results`` tables shared by the whole context."""
    return [
        TableSpec(
            name=f"{context.name}_{kind}",
            columns=(*_FIXED_HEAD[kind], *_KAFKA),
            engine="MergeTree",
            order_by=("command_id",),
            kind=kind,
        )
        for kind in ("command_log", "command_results")
    ]


def commands_view_sql(context: BoundedContext, database: str) -> str:
    """The ``<ctx>_commands`` audit view: one row per result, with its command if decoded.

    A result's own value wins; the command log's fills what the result lacks. Columns of a
    command that was never decoded (``invalid`` results) are NULL, ``latency_ms`` too.
    """
    results, log = (f"{context.name}_command_results", f"{context.name}_command_log")

    def r(column: str) -> str:
        return f"r.{quoted_identifier(column)}"

    def lg(column: str) -> str:
        return f"l.{quoted_identifier(column)}"

    def either(column: str) -> str:
        return f"coalesce(nullIf({r(column)}, ''), {lg(column)}, '')"

    select = [
        (quoted_identifier("command_id"), "command_id"),
        (either("command_type"), "command_type"),
        (r("aggregate_type"), "aggregate_type"),
        (either("aggregate_id"), "aggregate_id"),
        (either("tenant"), "tenant"),
        (either("principal"), "principal"),
        (lg("request_id"), "request_id"),
        (lg("issued_at"), "issued_at"),
        (r("processed_at"), "processed_at"),
        (r("outcome"), "outcome"),
        (r("code"), "code"),
        (r("message"), "message"),
        (r("version"), "version"),
        (lg("payload"), "payload"),
        (f"dateDiff('millisecond', {lg('issued_at')}, {r('processed_at')})", "latency_ms"),
    ]
    columns = ",\n".join(f"    {expr} AS {quoted_identifier(alias)}" for expr, alias in select)
    key = quoted_identifier("command_id")
    return (
        f"CREATE VIEW IF NOT EXISTS {qualified_table(database, f'{context.name}_commands')} AS\n"
        f"SELECT\n{columns}\n"
        f"FROM {qualified_table(database, results)} AS r\n"
        f"LEFT JOIN {qualified_table(database, log)} AS l USING ({key})\n"
        "SETTINGS join_use_nulls = 1"
    )


def projection_ddl(context: BoundedContext, database: str) -> str:
    """The whole reviewable SQL script: every aggregate's tables, the context's, the view."""
    tables = [t for a in context.aggregates for t in aggregate_tables(context, a)]
    tables += context_tables(context)
    statements = [t.create_sql(database) for t in tables] + [commands_view_sql(context, database)]
    header = (
        f"-- Generated by `streamfold projections ddl` for context {context.name} "
        f"into database {database}: do not edit.\n"
    )
    return header + ";\n\n".join(statements) + ";\n"
