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

Avro to ClickHouse (:func:`clickhouse_type`; :func:`column_value` converts a value decoded by
fastavro into what clickhouse-connect inserts in that column):

=======================================  ====================================  ===============
Avro                                     ClickHouse                            value
=======================================  ====================================  ===============
``string``, ``bytes``                    ``String``                            str, bytes
``boolean``                              ``Bool``
``int`` / ``long``                       ``Int32`` / ``Int64``
``float`` / ``double``                   ``Float32`` / ``Float64``
``fixed`` (size n)                       ``FixedString(n)``                    bytes
``enum``                                 ``LowCardinality(String)``            symbol
``decimal`` (bytes or fixed)             ``Decimal(p, s)``, p <= 76            Decimal
``uuid``                                 ``UUID``                              str
``date``                                 ``Date32``                            date
``time-millis`` / ``time-micros``        ``Int32`` / ``Int64``                 ms / µs of day
``timestamp-millis``,                    ``DateTime64(3, 'UTC')``              datetime
``local-timestamp-millis``
``timestamp-micros``,                    ``DateTime64(6, 'UTC')``              datetime
``local-timestamp-micros``
``array`` / ``map``                      ``Array(T)`` / ``Map(String, T)``     list / dict
``["null", T]``                          ``Nullable(T)``                       None
nested ``record``, any other union       ``String``                            JSON text
=======================================  ====================================  ===============

ClickHouse cannot wrap ``Array``, ``Map`` or ``LowCardinality`` in ``Nullable``: a nullable
one keeps the non-nullable type and ``null`` becomes empty (``[]``, ``{}``, ``''``). A local
timestamp is stored as if it were UTC. Named types referenced by (full or short) name
resolve; an unknown logical type falls back to its underlying type, as the Avro spec says.

Every table and column name must be an identifier (``[A-Za-z_][A-Za-z0-9_]*``) and is emitted
backquoted; every type is checked against ClickHouse's type grammar. No SQL is built from an
unchecked string: a bad name raises :class:`ProjectionSchemaError` naming the model and field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel

from streamfold.contracts.avro import avro_schema
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import AggregateDeleted, AggregateRecovered
from streamfold.errors import ConfigurationError

__all__ = [
    "Column",
    "ProjectionSchemaError",
    "TableKind",
    "TableSpec",
    "aggregate_tables",
    "clickhouse_type",
    "column_plan",
    "column_value",
    "commands_view_sql",
    "context_tables",
    "json_bytes",
    "json_text",
    "named_types",
    "projection_ddl",
    "qualified_table",
    "quoted_identifier",
    "row_converter",
]

AvroType = str | dict[str, Any] | list[Any]
Converter = Callable[[Any], Any]
TableKind = Literal["state_last", "state", "events", "command_log", "command_results"]

DEDUPLICATION_WINDOW = 10_000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENGINE = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\(([A-Za-z_]\w*(?:, [A-Za-z_]\w*)*)\))?", re.ASCII)
_TYPE_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\d+)|('[A-Za-z0-9_/+:-]*')|([(),]))")
_ZERO_DEFAULT = re.compile(r"U?Int\d+|Float\d+|Bool|Decimal\(.*\)")
_NOT_NULLABLE = ("Array(", "Map(", "LowCardinality(", "Nullable(")
_MAX_DECIMAL_PRECISION = 76
_DT3 = "DateTime64(3, 'UTC')"
_DT6 = "DateTime64(6, 'UTC')"


class ProjectionSchemaError(ConfigurationError):
    """A model or name cannot become a ClickHouse table; the message names model and field."""


# --- names and types ----------------------------------------------------------------------


def _identifier(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ProjectionSchemaError(f"{what}: {name!r} is not an identifier [A-Za-z_][A-Za-z0-9_]*")
    return name


def _quote(name: str) -> str:
    return f"`{_identifier(name, 'identifier')}`"


def _check_type(text: str, what: str) -> None:
    """Fail unless ``text`` is ``Name`` or ``Name(arg, ...)`` with type, integer or 'word' args."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TYPE_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ProjectionSchemaError(f"{what}: {text!r} is not a ClickHouse type")
        group = match.lastindex or 0
        tokens.append((("", "name", "int", "str", "punct")[group], match.group(group)))
        pos = match.end()
    tokens.append(("end", ""))

    def parse(i: int) -> int:  # a type starting at token i; returns the index after it
        if tokens[i][0] != "name":
            raise ProjectionSchemaError(f"{what}: {text!r} is not a ClickHouse type")
        if tokens[i + 1][1] != "(":
            return i + 1
        i += 1  # at "(", then at each ","
        while tokens[i][1] in ("(", ","):
            literal = tokens[i + 1][0] in ("int", "str")
            i = i + 2 if literal else parse(i + 1)
        if tokens[i][1] != ")":
            raise ProjectionSchemaError(f"{what}: {text!r} is not a ClickHouse type")
        return i + 1

    if parse(0) != len(tokens) - 1:
        raise ProjectionSchemaError(f"{what}: {text!r} is not a ClickHouse type")


@dataclass(frozen=True)
class Column:
    """A ClickHouse column: an identifier and a type checked against the type grammar."""

    name: str
    type: str

    def __post_init__(self) -> None:
        _identifier(self.name, "column")
        _check_type(self.type, f"column {self.name}")

    def sql(self) -> str:
        """The column's definition: ```name` Type``."""
        return f"{_quote(self.name)} {self.type}"


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
        _identifier(self.name, "table")
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
            engine += f"({', '.join(_quote(a) for a in match.group(2).split(', '))})"
        columns = ",\n".join(f"    {c.sql()}" for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {qualified_table(database, self.name)}\n(\n{columns}\n)\n"
            f"ENGINE = {engine}\n"
            f"ORDER BY ({', '.join(_quote(c) for c in self.order_by)})\n"
            f"SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        )

    def qualified(self, database: str) -> str:
        """```database`.`name```, checked and quoted."""
        return qualified_table(database, self.name)

    def add_column_sql(self, database: str, column: Column) -> str:
        """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, for a field a model gained."""
        table = qualified_table(database, self.name)
        return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.sql()}"


def quoted_identifier(name: str, what: str) -> str:
    """```name```, a checked identifier (else :class:`ProjectionSchemaError` naming ``what``)."""
    return f"`{_identifier(name, what)}`"


def qualified_table(database: str, name: str) -> str:
    """```database`.`name```: both checked identifiers (else :class:`ProjectionSchemaError`)."""
    return f"{_quote(_identifier(database, 'database'))}.{_quote(name)}"


# --- Avro to ClickHouse -----------------------------------------------------------------


class _Leaf(NamedTuple):
    clickhouse: str
    convert: Converter | None  # None: fastavro's value is what clickhouse-connect takes
    base: str | None = None  # a logical type applies only to this Avro type


def json_text(value: Any) -> str:
    """Render a nested record, a union value or a whole message as JSON text (sorted keys;
    decimals, UUIDs and bytes as strings, datetimes in ISO 8601)."""
    return json_bytes(value).decode()


def json_bytes(value: Any) -> bytes:
    """:func:`json_text` as UTF-8 bytes, what a ``String`` column stores."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SORT_KEYS)


def _json_default(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _time_millis(value: dt.time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 + value.microsecond // 1000


def _time_micros(value: dt.time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# The mapping table: Avro type names (primitives, "enum", "record") and logical types.
_LEAVES: dict[str, _Leaf] = {
    "string": _Leaf("String", None),
    "bytes": _Leaf("String", None),
    "boolean": _Leaf("Bool", None),
    "int": _Leaf("Int32", None),
    "long": _Leaf("Int64", None),
    "float": _Leaf("Float32", None),
    "double": _Leaf("Float64", None),
    "enum": _Leaf("LowCardinality(String)", None),
    "record": _Leaf("String", json_text),
    "uuid": _Leaf("UUID", str, "string"),
    "date": _Leaf("Date32", None, "int"),
    "time-millis": _Leaf("Int32", _time_millis, "int"),
    "time-micros": _Leaf("Int64", _time_micros, "long"),
    "timestamp-millis": _Leaf(_DT3, None, "long"),
    "local-timestamp-millis": _Leaf(_DT3, _as_utc, "long"),
    "timestamp-micros": _Leaf(_DT6, None, "long"),
    "local-timestamp-micros": _Leaf(_DT6, _as_utc, "long"),
}


class _Mapped(NamedTuple):
    type: str
    convert: Converter | None


def _map(avro: AvroType, named: Mapping[str, Any], where: str) -> _Mapped:
    """Map one Avro type to its ClickHouse type and value converter."""
    if isinstance(avro, list):
        return _union(avro, named, where)
    if isinstance(avro, str):
        if avro in _LEAVES:
            return _leaf(_LEAVES[avro])
        if avro not in named:
            raise ProjectionSchemaError(f"{where}: unknown Avro type {avro!r}")
    schema: Mapping[str, Any] = named[avro] if isinstance(avro, str) else avro
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = schema.get("precision"), schema.get("scale", 0)
        if not (isinstance(precision, int) and 0 < precision <= _MAX_DECIMAL_PRECISION):
            raise ProjectionSchemaError(f"{where}: decimal precision {precision!r} not in 1..76")
        if not (isinstance(scale, int) and 0 <= scale <= precision):
            raise ProjectionSchemaError(f"{where}: decimal scale {scale!r} not in 0..{precision}")
        return _Mapped(f"Decimal({precision}, {scale})", None)
    leaf = _LEAVES.get(logical) if isinstance(logical, str) else None
    if leaf is not None and leaf.base == kind:
        return _Mapped(leaf.clickhouse, leaf.convert)
    if kind == "fixed":
        size = schema.get("size")
        if not (isinstance(size, int) and size > 0):
            raise ProjectionSchemaError(f"{where}: fixed size {size!r} is not a positive int")
        return _Mapped(f"FixedString({size})", None)
    if kind == "array":
        items = _map(schema["items"], named, f"{where}[]")
        if items.convert is None:
            return _Mapped(f"Array({items.type})", None)
        item = items.convert
        return _Mapped(f"Array({items.type})", lambda v: [item(x) for x in v])
    if kind == "map":
        values = _map(schema["values"], named, f"{where}{{}}")
        if values.convert is None:
            return _Mapped(f"Map(String, {values.type})", None)
        value = values.convert
        return _Mapped(f"Map(String, {values.type})", lambda v: {k: value(x) for k, x in v.items()})
    if isinstance(kind, str | list | dict) and kind not in ("record", "enum"):
        return _map(kind, named, where)  # {"type": "long"}, or a logical type we do not map
    if kind in _LEAVES:
        return _leaf(_LEAVES[str(kind)])
    raise ProjectionSchemaError(f"{where}: Avro type {schema!r} has no ClickHouse mapping")


def _leaf(leaf: _Leaf) -> _Mapped:
    return _Mapped(leaf.clickhouse, leaf.convert)


def _union(branches: list[Any], named: Mapping[str, Any], where: str) -> _Mapped:
    others = [b for b in branches if b != "null"]
    if not others:
        raise ProjectionSchemaError(f"{where}: a union needs a non-null branch, got {branches}")
    nullable = len(others) < len(branches)
    inner = _map(others[0], named, where) if len(others) == 1 else _Mapped("String", json_text)
    return _nullable(inner) if nullable else inner


def _nullable(mapped: _Mapped) -> _Mapped:
    """``Nullable(T)``, or T with ``null`` as its empty value where T cannot be Nullable."""
    if mapped.type.startswith(_NOT_NULLABLE):
        empty = _empty(mapped.type)
        if mapped.type.startswith("Nullable(") or empty is None:
            return mapped
        return _Mapped(mapped.type, _or_empty(mapped.convert, type(empty)))
    if mapped.convert is None:
        return _Mapped(f"Nullable({mapped.type})", None)
    convert = mapped.convert
    return _Mapped(f"Nullable({mapped.type})", lambda v: None if v is None else convert(v))


def _empty(clickhouse: str) -> Any:
    """What ``null`` becomes in a column of a non-nullable type (None: no such value)."""
    if clickhouse.startswith("Array("):
        return []
    if clickhouse.startswith("Map("):
        return {}
    if clickhouse in ("String", "LowCardinality(String)"):
        return ""
    if _ZERO_DEFAULT.fullmatch(clickhouse):
        return 0
    return None


def named_types(avro: Any, namespace: str | None, found: dict[str, Any]) -> None:
    """Collect the record, enum and fixed definitions of ``avro`` by full and short name."""
    if isinstance(avro, list):
        for branch in avro:
            named_types(branch, namespace, found)
        return
    if not isinstance(avro, dict):
        return
    kind = avro.get("type")
    if kind in ("record", "error", "enum", "fixed") and isinstance(avro.get("name"), str):
        name: str = avro["name"]
        namespace = avro.get("namespace", namespace) if "." not in name else name.rpartition(".")[0]
        short = name.rpartition(".")[2]
        found[f"{namespace}.{short}" if namespace else short] = avro
        found.setdefault(short, avro)
    for field in avro.get("fields", []) if kind in ("record", "error") else []:
        named_types(field.get("type"), namespace, found)
    for key in ("items", "values"):
        if key in avro:
            named_types(avro[key], namespace, found)
    if isinstance(kind, dict | list):
        named_types(kind, namespace, found)


def clickhouse_type(avro: AvroType, named: Mapping[str, Any] | None = None) -> str:
    """The ClickHouse type of an Avro type; ``named``: definitions of names it references."""
    return _map(avro, named or {}, "type").type


def column_value(avro: AvroType, value: Any, named: Mapping[str, Any] | None = None) -> Any:
    """Convert one value decoded by fastavro for the column of ``avro``'s type.

    For one value; the sink's hot path uses :func:`row_converter`, which maps types once.
    """
    convert = _map(avro, named or {}, "value").convert
    return value if convert is None else convert(value)


def _record_fields(
    schema: Mapping[str, Any], skip: Sequence[str] = ()
) -> Iterator[tuple[str, _Mapped]]:
    """Map each top-level field of an Avro record schema (except ``skip``)."""
    model = schema.get("name", "record")
    if schema.get("type") != "record":
        raise ProjectionSchemaError(f"{model}: a projection needs an Avro record schema")
    named: dict[str, Any] = {}
    named_types(dict(schema), None, named)
    for field in schema["fields"]:
        name = field["name"]
        if name in skip:
            continue
        where = f"{model}.{name}"
        _identifier(name, f"{model}: field")
        yield name, _map(field["type"], named, where)


def row_converter(
    schema: Mapping[str, Any], columns: Sequence[Column] | None = None
) -> Callable[[Mapping[str, Any]], list[Any]]:
    """Precompute the conversion of records of Avro ``schema`` (decoded by fastavro) to rows.

    The row holds the values of ``columns`` in order (by default, the schema's own fields):
    a column the record lacks gets ``None``, or its empty value if its type is not nullable,
    as does a ``null`` for such a column. One call per field and no type dispatch per row.
    """
    steps = tuple(column_plan(schema, columns))

    def convert(record: Mapping[str, Any]) -> list[Any]:
        get = record.get
        return [get(name) if fn is None else fn(get(name)) for name, fn in steps]

    return convert


def column_plan(
    schema: Mapping[str, Any], columns: Sequence[Column] | None = None
) -> list[tuple[str, Converter | None]]:
    """For each of ``columns`` (by default the schema's own fields), the field it takes from
    a record of Avro ``schema`` and the converter of its value (None: as fastavro decodes
    it). A column the schema lacks takes the field of its name anyway (records lack it:
    ``None``), through a converter to its empty value if its type is not nullable."""
    fields = dict(_record_fields(schema))
    targets = columns if columns is not None else [Column(n, m.type) for n, m in fields.items()]
    plan: list[tuple[str, Converter | None]] = []
    for column in targets:
        mapped = fields.get(column.name)
        empty = None if column.type.startswith("Nullable(") else _empty(column.type)
        if mapped is None:
            plan.append((column.name, None if empty is None else _constant(empty)))
        elif empty is not None and mapped.type.startswith("Nullable("):
            plan.append((column.name, _or_empty(mapped.convert, type(empty))))
        else:
            plan.append((column.name, mapped.convert))
    return plan


def _constant(empty: Any) -> Converter:
    factory = type(empty)
    return lambda _: factory()


def _or_empty(convert: Converter | None, factory: Callable[[], Any]) -> Converter:
    if convert is None:
        return lambda v: factory() if v is None else v
    return lambda v: factory() if v is None else convert(v)


# --- tables -------------------------------------------------------------------------------

_LC = "LowCardinality(String)"
_KAFKA = (Column("_topic", _LC), Column("_partition", "UInt32"), Column("_offset", "UInt64"))
_STATE_HEAD = (
    Column("tenant", _LC),
    Column("aggregate_id", "String"),
    Column("version", "UInt64"),
    Column("deleted", "UInt8"),
    Column("updated_at", _DT3),
    Column("command_id", "String"),
)
_EVENTS_HEAD = (
    Column("tenant", _LC),
    Column("aggregate_id", "String"),
    Column("version", "UInt64"),
    Column("event_type", _LC),
    Column("event_time", _DT3),
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
    Column("issued_at", _DT3),
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
    Column("processed_at", _DT3),
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
    for name, mapped in _record_fields(avro_schema(model, context.namespace), skip):
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
        merged = _strip_nullable(first_type)
        for event, ch_type in seen[1:]:
            widened = _widen(merged, _strip_nullable(ch_type))
            if widened is None:
                raise ProjectionSchemaError(
                    f"{aggregate.name} events: field {name!r} is {first_type} in {first_event} "
                    f"but {ch_type} in {event}; rename one of them"
                )
            merged = widened
        uniform = len(seen) == len(per_event) and all(t == first_type for _, t in seen)
        nullable = _nullable(_Mapped(merged, None)).type
        columns.append(Column(name, first_type if uniform else nullable))
    return columns


def _strip_nullable(clickhouse: str) -> str:
    return clickhouse[9:-1] if clickhouse.startswith("Nullable(") else clickhouse


_PROMOTIONS: dict[frozenset[str], str] = {
    frozenset({"Int32", "Int64"}): "Int64",
    frozenset({"Float32", "Float64"}): "Float64",
    frozenset({"Int32", "Float32"}): "Float64",
    frozenset({"Int32", "Float64"}): "Float64",
    frozenset({"Int64", "Float32"}): "Float64",
    frozenset({"Int64", "Float64"}): "Float64",
}


def _widen(a: str, b: str) -> str | None:
    """The type holding both (Avro's numeric promotions), or None if they conflict."""
    return a if a == b else _PROMOTIONS.get(frozenset({a, b}))


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
        return f"r.{_quote(column)}"

    def lg(column: str) -> str:
        return f"l.{_quote(column)}"

    def either(column: str) -> str:
        return f"coalesce(nullIf({r(column)}, ''), {lg(column)}, '')"

    select = [
        (_quote("command_id"), "command_id"),
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
    columns = ",\n".join(f"    {expr} AS {_quote(alias)}" for expr, alias in select)
    return (
        f"CREATE VIEW IF NOT EXISTS {qualified_table(database, f'{context.name}_commands')} AS\n"
        f"SELECT\n{columns}\n"
        f"FROM {qualified_table(database, results)} AS r\n"
        f"LEFT JOIN {qualified_table(database, log)} AS l USING ({_quote('command_id')})\n"
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
