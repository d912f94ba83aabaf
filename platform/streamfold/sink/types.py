"""Avro to ClickHouse: the one type table the sink's three write paths and its DDL read.

Per Avro type (a primitive, ``enum``, a nested ``record``, or a logical type on its base
type), :data:`LEAVES` holds every form the sink needs:

- the column's ClickHouse type, which the DDL (:mod:`streamfold.sink.ddl`) creates;
- the converter of a value fastavro decodes into what clickhouse-connect inserts (the Python
  path, :func:`row_converter`);
- the type ClickHouse's ``file(…, 'Avro', structure)`` reads it as, and the SQL that spells a
  value of it in an event's ``payload`` as :func:`json_text` does (the framed path,
  :mod:`streamfold.sink.passthrough`, through :func:`file_type`);
- its Arrow type (the insert format, :mod:`streamfold.sink.arrow`).

=====================================  ==================================  ===============  ======
Avro                                   ClickHouse                          value            framed
=====================================  ==================================  ===============  ======
``string``, ``bytes``                  ``String``                          str, bytes       yes
``boolean``                            ``Bool``                                             yes
``int`` / ``long``                     ``Int32`` / ``Int64``                                yes
``float`` / ``double``                 ``Float32`` / ``Float64``                            [1]
``fixed`` (size n)                     ``FixedString(n)``                  bytes            [1]
``enum``                               ``LowCardinality(String)``          symbol           yes
``decimal`` (bytes or fixed)           ``Decimal(p, s)``, p <= 76          Decimal          [2]
``uuid``                               ``UUID``                            str              yes
``date``                               ``Date32``                          date             yes
``time-millis`` / ``time-micros``      ``Int32`` / ``Int64``               ms / µs of day   [1]
``timestamp-millis``,                  ``DateTime64(3, 'UTC')``            datetime         yes
``local-timestamp-millis``                                                                  [1]
``timestamp-micros``,                  ``DateTime64(6, 'UTC')``            datetime         yes
``local-timestamp-micros``                                                                  [1]
``array`` / ``map``                    ``Array(T)`` / ``Map(String, T)``   list / dict      [1]
``["null", T]``                        ``Nullable(T)``                     None             [3]
nested ``record``, any other union     ``String``                          JSON text        no
=====================================  ==================================  ===============  ======

[1] framed, but not in an event's payload (ClickHouse's JSON spelling of it differs, or it has
none), so an event schema with it keeps the Python path. [2] in a payload only up to scale 6
and precision 28. [3] if T is framed and can be ``Nullable`` in ClickHouse.

ClickHouse cannot wrap ``Array``, ``Map`` or ``LowCardinality`` in ``Nullable``: a nullable
one keeps the non-nullable type and ``null`` becomes empty (``[]``, ``{}``, ``''``). A local
timestamp is stored as if it were UTC. Named types referenced by (full or short) name
resolve; an unknown logical type falls back to its underlying type, as the Avro spec says.

The module is one concept, every rule that turns an Avro type into a ClickHouse one, kept
whole (over 500 lines) so that the paths cannot drift apart.

Every column name must be an identifier (``[A-Za-z_][A-Za-z0-9_]*``) and every type is
checked against ClickHouse's type grammar (:class:`Column`): a bad one raises
:class:`ProjectionSchemaError` naming the model and field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from streamfold.errors import ConfigurationError

__all__ = [
    "LEAVES",
    "Column",
    "FileType",
    "Leaf",
    "ProjectionSchemaError",
    "clickhouse_type",
    "column_plan",
    "column_value",
    "file_type",
    "identifier",
    "is_identifier",
    "json_bytes",
    "json_text",
    "named_types",
    "nullable_type",
    "quoted_identifier",
    "record_fields",
    "row_converter",
    "strip_nullable",
    "widen",
]

AvroType = str | dict[str, Any] | list[Any]
Converter = Callable[[Any], Any]

DT3 = "DateTime64(3, 'UTC')"
DT6 = "DateTime64(6, 'UTC')"
MAX_DECIMAL_PRECISION = 76
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TYPE_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\d+)|('[A-Za-z0-9_/+:-]*')|([(),]))")
_ZERO_DEFAULT = re.compile(r"U?Int\d+|Float\d+|Bool|Decimal\(.*\)")
#: ClickHouse types that ``Nullable(…)`` cannot wrap.
NOT_NULLABLE = ("Array(", "Map(", "LowCardinality(")
#: A decimal in a payload: str(Decimal) switches to exponents below 1e-6, and fastavro scales
#: decimals in a 28-digit context.
_MAX_PAYLOAD_SCALE = 6
_MAX_PAYLOAD_PRECISION = 28


class ProjectionSchemaError(ConfigurationError):
    """A model or name cannot become a ClickHouse table; the message names model and field."""


# --- names and types ----------------------------------------------------------------------


def is_identifier(name: object) -> bool:
    """Whether ``name`` is a string that is an identifier, ``[A-Za-z_][A-Za-z0-9_]*``: the
    one check of every table, column and database name the sink writes into SQL."""
    return isinstance(name, str) and _IDENTIFIER.fullmatch(name) is not None


def identifier(name: str, what: str) -> str:
    """``name`` if it is an identifier, else :class:`ProjectionSchemaError` naming ``what``."""
    if not is_identifier(name):
        raise ProjectionSchemaError(f"{what}: {name!r} is not an identifier [A-Za-z_][A-Za-z0-9_]*")
    return name


def quoted_identifier(name: str, what: str = "identifier") -> str:
    """```name```, a checked identifier (else :class:`ProjectionSchemaError` naming ``what``)."""
    return f"`{identifier(name, what)}`"


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
        identifier(self.name, "column")
        _check_type(self.type, f"column {self.name}")

    def sql(self) -> str:
        """The column's definition: ```name` Type``."""
        return f"{quoted_identifier(self.name)} {self.type}"


# --- JSON and value converters ------------------------------------------------------------


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


# --- the table ----------------------------------------------------------------------------

# SQL over ``{x}`` that spells a value as json_text does.
_QUOTED = "concat('\"', toString({x}), '\"')"
_MICROS = "positiveModulo(toUnixTimestamp64Micro({x}), 1000000)"
_ISO_UTC = (
    "concat('\"', formatDateTime({x}, '%Y-%m-%dT%H:%i:%S', 'UTC'), "
    f"if({_MICROS} = 0, '', concat('.', leftPad(toString({_MICROS}), 6, '0'))), "
    "'+00:00\"')"
)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One Avro type in every form the sink needs (see the module docstring)."""

    clickhouse: str  # the column's type
    convert: Converter | None  # fastavro's value to clickhouse-connect's; None: as it is
    base: str | None  # a logical type applies only to this Avro type
    file: str | None  # what ClickHouse's Avro input reads it as; None: not framed
    json: str | None  # SQL over {x} spelling it in a payload; None: not in a framed payload
    arrow: str | None  # the pyarrow type ("int32", "timestamp[ms]"); None: Native format


#: Avro type names (primitives, ``enum``, ``record``) and logical types.
LEAVES: dict[str, Leaf] = {
    "string": Leaf("String", None, None, "String", "toJSONString({x})", "binary"),
    "bytes": Leaf("String", None, None, "String", None, "binary"),
    "boolean": Leaf("Bool", None, None, "Bool", "if({x}, 'true', 'false')", "bool_"),
    "int": Leaf("Int32", None, None, "Int32", "toString({x})", "int32"),
    "long": Leaf("Int64", None, None, "Int64", "toString({x})", "int64"),
    "float": Leaf("Float32", None, None, "Float32", None, "float32"),
    "double": Leaf("Float64", None, None, "Float64", None, "float64"),
    "enum": Leaf("LowCardinality(String)", None, None, "String", "toJSONString({x})", "binary"),
    "record": Leaf("String", json_text, None, None, None, "binary"),
    "uuid": Leaf("UUID", str, "string", "UUID", _QUOTED, None),
    "date": Leaf("Date32", None, "int", "Date32", _QUOTED, "date32"),
    "time-millis": Leaf("Int32", _time_millis, "int", "Int32", None, "int32"),
    "time-micros": Leaf("Int64", _time_micros, "long", "Int64", None, "int64"),
    "timestamp-millis": Leaf(DT3, None, "long", DT3, _ISO_UTC, "timestamp[ms]"),
    "local-timestamp-millis": Leaf(DT3, _as_utc, "long", DT3, None, "timestamp[ms]"),
    "timestamp-micros": Leaf(DT6, None, "long", DT6, _ISO_UTC, "timestamp[us]"),
    "local-timestamp-micros": Leaf(DT6, _as_utc, "long", DT6, None, "timestamp[us]"),
}
_PRIMITIVES = ("string", "bytes", "boolean", "int", "long", "float", "double")


def _leaf(avro: Mapping[str, Any]) -> Leaf | None:
    """The row of a schema whose logical type the table maps on its base type, or None."""
    logical = avro.get("logicalType")
    leaf = LEAVES.get(logical) if isinstance(logical, str) else None
    if leaf is None or leaf.base is None or leaf.base != avro.get("type"):
        return None
    return leaf


def _decimal(avro: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """A decimal's (precision, scale) as written, or None if ``avro`` is no decimal."""
    if avro.get("logicalType") == "decimal" and avro.get("type") in ("bytes", "fixed"):
        return avro.get("precision"), avro.get("scale", 0)
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


# --- the columns: DDL types and the Python path's converters -------------------------------


class Mapped(NamedTuple):
    """A column's ClickHouse type, and the converter of its values (None: as decoded)."""

    type: str
    convert: Converter | None


def _map(avro: AvroType, named: Mapping[str, Any], where: str) -> Mapped:
    """Map one Avro type to its ClickHouse type and value converter."""
    if isinstance(avro, list):
        return _union(avro, named, where)
    if isinstance(avro, str):
        if avro in LEAVES:
            return _mapped(LEAVES[avro])
        if avro not in named:
            raise ProjectionSchemaError(f"{where}: unknown Avro type {avro!r}")
    schema: Mapping[str, Any] = named[avro] if isinstance(avro, str) else avro
    kind = schema.get("type")
    if (decimal := _decimal(schema)) is not None:
        precision, scale = decimal
        if not (isinstance(precision, int) and 0 < precision <= MAX_DECIMAL_PRECISION):
            raise ProjectionSchemaError(f"{where}: decimal precision {precision!r} not in 1..76")
        if not (isinstance(scale, int) and 0 <= scale <= precision):
            raise ProjectionSchemaError(f"{where}: decimal scale {scale!r} not in 0..{precision}")
        return Mapped(f"Decimal({precision}, {scale})", None)
    if (leaf := _leaf(schema)) is not None:
        return _mapped(leaf)
    if kind == "fixed":
        size = schema.get("size")
        if not (isinstance(size, int) and size > 0):
            raise ProjectionSchemaError(f"{where}: fixed size {size!r} is not a positive int")
        return Mapped(f"FixedString({size})", None)
    if kind == "array":
        items = _map(schema["items"], named, f"{where}[]")
        if items.convert is None:
            return Mapped(f"Array({items.type})", None)
        item = items.convert
        return Mapped(f"Array({items.type})", lambda v: [item(x) for x in v])
    if kind == "map":
        values = _map(schema["values"], named, f"{where}{{}}")
        if values.convert is None:
            return Mapped(f"Map(String, {values.type})", None)
        value = values.convert
        return Mapped(f"Map(String, {values.type})", lambda v: {k: value(x) for k, x in v.items()})
    if isinstance(kind, str | list | dict) and kind not in ("record", "enum"):
        return _map(kind, named, where)  # {"type": "long"}, or a logical type we do not map
    if kind in LEAVES:
        return _mapped(LEAVES[str(kind)])
    raise ProjectionSchemaError(f"{where}: Avro type {schema!r} has no ClickHouse mapping")


def _mapped(leaf: Leaf) -> Mapped:
    return Mapped(leaf.clickhouse, leaf.convert)


def _union(branches: list[Any], named: Mapping[str, Any], where: str) -> Mapped:
    others = [b for b in branches if b != "null"]
    if not others:
        raise ProjectionSchemaError(f"{where}: a union needs a non-null branch, got {branches}")
    nullable = len(others) < len(branches)
    inner = _map(others[0], named, where) if len(others) == 1 else Mapped("String", json_text)
    return _nullable(inner) if nullable else inner


def _nullable(mapped: Mapped) -> Mapped:
    """``Nullable(T)``, or T with ``null`` as its empty value where T cannot be Nullable."""
    if mapped.type.startswith("Nullable("):
        return mapped
    if mapped.type.startswith(NOT_NULLABLE):
        empty = _empty(mapped.type)
        return (
            mapped if empty is None else Mapped(mapped.type, _or_empty(mapped.convert, type(empty)))
        )
    if mapped.convert is None:
        return Mapped(f"Nullable({mapped.type})", None)
    convert = mapped.convert
    return Mapped(f"Nullable({mapped.type})", lambda v: None if v is None else convert(v))


def nullable_type(clickhouse: str) -> str:
    """The type of a column of ``clickhouse`` values that may be missing."""
    return _nullable(Mapped(clickhouse, None)).type


def strip_nullable(clickhouse: str) -> str:
    return clickhouse[9:-1] if clickhouse.startswith("Nullable(") else clickhouse


_PROMOTIONS: dict[frozenset[str], str] = {
    frozenset({"Int32", "Int64"}): "Int64",
    frozenset({"Float32", "Float64"}): "Float64",
    frozenset({"Int32", "Float32"}): "Float64",
    frozenset({"Int32", "Float64"}): "Float64",
    frozenset({"Int64", "Float32"}): "Float64",
    frozenset({"Int64", "Float64"}): "Float64",
}


def widen(a: str, b: str) -> str | None:
    """The type holding both (Avro's numeric promotions), or None if they conflict."""
    return a if a == b else _PROMOTIONS.get(frozenset({a, b}))


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


def clickhouse_type(avro: AvroType, named: Mapping[str, Any] | None = None) -> str:
    """The ClickHouse type of an Avro type; ``named``: definitions of names it references."""
    return _map(avro, named or {}, "type").type


def column_value(avro: AvroType, value: Any, named: Mapping[str, Any] | None = None) -> Any:
    """Convert one value decoded by fastavro for the column of ``avro``'s type.

    For one value; the sink's hot path uses :func:`row_converter`, which maps types once.
    """
    convert = _map(avro, named or {}, "value").convert
    return value if convert is None else convert(value)


def record_fields(
    schema: Mapping[str, Any], skip: Sequence[str] = ()
) -> Iterator[tuple[str, Mapped]]:
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
        identifier(name, f"{model}: field")
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
    fields = dict(record_fields(schema))
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


# --- the framed path: what ClickHouse's Avro input reads ----------------------------------


@dataclass(frozen=True, slots=True)
class FileType:
    """How ClickHouse reads one Avro type, and how the payload spells a value of it."""

    clickhouse: str
    json: str | None  # a SQL template over ``{x}``; None: the payload cannot spell it here


def file_type(avro: Any, named: Mapping[str, Any]) -> FileType | None:
    """The ClickHouse type of an Avro type in a ``file(…, 'Avro', structure)``, or None if
    the framed path cannot read it."""
    if isinstance(avro, list):
        others = [b for b in avro if b != "null"]
        if len(others) != 1 or len(avro) != 2:
            return None
        inner = file_type(others[0], named)
        if inner is None or inner.clickhouse.startswith(NOT_NULLABLE):
            return None
        spelled = None
        if inner.json is not None:
            value = inner.json.replace("{x}", "assumeNotNull({x})")
            spelled = f"if(isNull({{x}}), 'null', {value})"
        return FileType(f"Nullable({inner.clickhouse})", spelled)
    if isinstance(avro, str):
        if avro in _PRIMITIVES:
            return _file_type(LEAVES[avro])
        if avro not in named:
            return None
        avro = named[avro]
    if not isinstance(avro, dict):
        return None
    kind = avro.get("type")
    if (decimal := _decimal(avro)) is not None:
        precision, scale = decimal
        if not (isinstance(precision, int) and isinstance(scale, int)):
            return None
        if not 0 < precision <= MAX_DECIMAL_PRECISION:
            return None
        spelled = None
        if scale <= _MAX_PAYLOAD_SCALE and precision <= _MAX_PAYLOAD_PRECISION:
            spelled = f"concat('\"', toDecimalString({{x}}, {scale}), '\"')"
        return FileType(f"Decimal({precision}, {scale})", spelled)
    if (leaf := _leaf(avro)) is not None:
        return _file_type(leaf)
    if kind == "enum":
        return _file_type(LEAVES["enum"])
    if kind == "fixed" and isinstance(avro.get("size"), int):
        return FileType(f"FixedString({avro['size']})", None)
    if kind in ("array", "map"):
        inner = file_type(avro["items" if kind == "array" else "values"], named)
        if inner is None or inner.clickhouse.startswith("LowCardinality("):
            return None
        if kind == "array":
            return FileType(f"Array({inner.clickhouse})", None)
        return FileType(f"Map(String, {inner.clickhouse})", None)
    if isinstance(kind, str | list | dict) and kind not in ("record", "enum", "fixed"):
        return file_type(kind, named)  # {"type": "long"}, or a logical type not mapped
    return None


def _file_type(leaf: Leaf) -> FileType | None:
    return None if leaf.file is None else FileType(leaf.file, leaf.json)
