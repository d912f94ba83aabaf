"""Avro schemas generated from pydantic v2 models.

Why our own generator: the three libraries evaluated (see ``docs/contracts.md``) each missed
something this project relies on: postponed annotations, plain pydantic models without a
special base class, timestamp-millis, or Decimal with precision and scale.

Mapping (anything else fails with :class:`SchemaGenerationError` naming the field):

=============================  ==================================================
pydantic / Python              Avro
=============================  ==================================================
``bool`` ``int`` ``float``     ``boolean`` ``long`` ``double``
``str`` ``bytes``              ``string`` ``bytes``
``datetime``, AwareDatetime    ``long`` / ``timestamp-millis`` (use aware datetimes)
``date`` ``time``              ``int`` / ``date``, ``int`` / ``time-millis``
``Decimal`` (max_digits,       ``bytes`` / ``decimal`` with precision and scale
decimal_places required)
``UUID``                       ``string`` / ``uuid``
``StrEnum``                     ``enum`` whose symbols are the values
nested ``BaseModel``           ``record`` (defined once, then referenced by name)
``list`` ``tuple[T, ...]``     ``array``
``set`` ``frozenset``
``dict[str, T]``               ``map``
``T | None``                   ``["null", T]``; the default's branch comes first
``Literal["a", "b"]``          ``string``
=============================  ==================================================

Record and enum names are class names; every named type of one document shares the
context's namespace. Record, field and enum names and enum symbols must be Avro names
(``[A-Za-z_][A-Za-z0-9_]*``: ASCII, no quote, backtick or semicolon), else
:class:`SchemaGenerationError`: they travel to the registry, to other clients and, as
ClickHouse column names, into SQL. Field order is declaration order (it defines the binary
layout), a class docstring becomes the record's ``doc`` and a field's ``description`` the
field's ``doc``. Defaults are written when they are static (a value or a ``list``/``dict``/
``set`` factory). :func:`canonical_json` renders a schema byte-for-byte reproducibly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import inspect
import json
import re
import types
import typing
import uuid
from typing import Any

import pydantic
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streamfold.errors import ConfigurationError

__all__ = ["SchemaGenerationError", "avro_schema", "canonical_json", "full_name"]

AvroType = str | dict[str, Any] | list[Any]

_PRIMITIVES: dict[Any, str] = {
    bool: "boolean",
    int: "long",
    float: "double",
    str: "string",
    bytes: "bytes",
}
_TIMESTAMPS: tuple[Any, ...] = (dt.datetime, pydantic.AwareDatetime, pydantic.NaiveDatetime)
_TIMESTAMPS += (pydantic.PastDatetime, pydantic.FutureDatetime)
_DATES = (dt.date, pydantic.PastDate, pydantic.FutureDate)
_STATIC_FACTORIES: tuple[Any, ...] = (list, dict, set, frozenset, tuple)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # the Avro specification's, whole


class SchemaGenerationError(ConfigurationError):
    """A model cannot be mapped to Avro; the message names the model, field and type."""


def full_name(model: type[BaseModel], namespace: str) -> str:
    """The Avro full name of ``model`` in ``namespace``."""
    return f"{namespace}.{model.__name__}"


def avro_schema(model: type[BaseModel], namespace: str) -> dict[str, Any]:
    """Generate the Avro record schema of ``model`` in ``namespace``."""
    schema = _Builder(namespace).record(model)
    assert isinstance(schema, dict)
    return schema


def canonical_json(schema: AvroType) -> str:
    """Render a schema reproducibly: keys in builder order, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _avro_name(name: str, kind: str, where: str) -> str:
    """``name`` if it is an Avro name; else a :class:`SchemaGenerationError` naming it."""
    if not _AVRO_NAME.fullmatch(name):
        raise SchemaGenerationError(
            f"{where}: {kind} name {name!r} is not an Avro name [A-Za-z_][A-Za-z0-9_]*"
        )
    return name


class _Builder:
    """Builds one schema document; named types are defined once per document."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.defined: set[str] = set()

    def record(self, model: type[BaseModel]) -> AvroType:
        name = _avro_name(model.__name__, "record", model.__name__)
        if name in self.defined:
            return name
        self.defined.add(name)
        schema: dict[str, Any] = {"type": "record", "name": name}
        if len(self.defined) == 1:  # the top-level record carries the document's namespace
            schema["namespace"] = self.namespace
        doc = _doc(model)
        if doc:
            schema["doc"] = doc
        schema["fields"] = [self.field(model, n, f) for n, f in model.model_fields.items()]
        return schema

    def field(self, model: type[BaseModel], name: str, info: FieldInfo) -> dict[str, Any]:
        where = f"{model.__name__}.{name}"
        _avro_name(name, "field", where)
        avro_type = self.type_of(info.annotation, info.metadata, where)
        field: dict[str, Any] = {"name": name, "type": avro_type}
        default = _static_default(info)
        if default is not PydanticUndefined:
            if isinstance(avro_type, list) and "null" in avro_type and default is not None:
                # A union's default must match its first branch: put the non-null one first.
                field["type"] = [*(t for t in avro_type if t != "null"), "null"]
            field["default"] = _default_json(default, field["type"], where)
        if info.description:
            field["doc"] = info.description
        return field

    def type_of(self, annotation: Any, metadata: list[Any], where: str) -> AvroType:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            extra = [m for a in args[1:] for m in (a.metadata if isinstance(a, FieldInfo) else [a])]
            return self.type_of(args[0], [*metadata, *extra], where)
        if origin in (typing.Union, types.UnionType):
            branches = [self.type_of(a, metadata, where) for a in args if a is not type(None)]
            nullable = len(branches) < len(args)
            return ["null", *branches] if nullable else branches
        if origin is typing.Literal:
            kinds = {type(a) for a in args}
            if kinds == {str}:
                return "string"
            raise SchemaGenerationError(f"{where}: only string Literals map to Avro, got {kinds}")
        if origin in (list, set, frozenset) or (origin is tuple and args[1:] == (Ellipsis,)):
            return {"type": "array", "items": self.type_of(args[0], [], where)}
        if origin is dict:
            if args[0] is not str:
                raise SchemaGenerationError(f"{where}: Avro map keys are strings, got {args[0]}")
            return {"type": "map", "values": self.type_of(args[1], [], where)}
        return self.leaf(annotation, metadata, where)

    def leaf(self, annotation: Any, metadata: list[Any], where: str) -> AvroType:
        if annotation is type(None):
            return "null"
        if annotation in _PRIMITIVES:
            return _PRIMITIVES[annotation]
        if annotation in _TIMESTAMPS:
            return {"type": "long", "logicalType": "timestamp-millis"}
        if annotation in _DATES:
            return {"type": "int", "logicalType": "date"}
        if annotation is dt.time:
            return {"type": "int", "logicalType": "time-millis"}
        if annotation is uuid.UUID:
            return {"type": "string", "logicalType": "uuid"}
        if annotation is decimal.Decimal:
            precision = _constraint(metadata, "max_digits")
            scale = _constraint(metadata, "decimal_places")
            if precision is None or scale is None:
                raise SchemaGenerationError(
                    f"{where}: a Decimal needs max_digits and decimal_places "
                    "(Field(max_digits=12, decimal_places=2)) to become an Avro decimal"
                )
            return {
                "type": "bytes",
                "logicalType": "decimal",
                "precision": precision,
                "scale": scale,
            }
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return self.enum(annotation, where)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.record(annotation)
        raise SchemaGenerationError(f"{where}: type {annotation!r} has no Avro mapping")

    def enum(self, enum_type: type[enum.Enum], where: str) -> AvroType:
        name = _avro_name(enum_type.__name__, "enum", where)
        if name in self.defined:
            return name
        symbols = [member.value for member in enum_type]
        if not issubclass(enum_type, str) or not all(_AVRO_NAME.fullmatch(s) for s in symbols):
            raise SchemaGenerationError(
                f"{where}: enum {name} must be a StrEnum whose values are identifiers "
                f"(they become Avro symbols), got {symbols}"
            )
        self.defined.add(name)
        schema: dict[str, Any] = {"type": "enum", "name": name}
        doc = _doc(enum_type)
        if doc:
            schema["doc"] = doc
        schema["symbols"] = symbols
        return schema


def _doc(cls: type) -> str:
    own = cls.__dict__.get("__doc__")
    return inspect.cleandoc(own) if isinstance(own, str) else ""


def _constraint(metadata: list[Any], name: str) -> int | None:
    for item in metadata:
        value = getattr(item, name, None)
        if isinstance(value, int):
            return value
    return None


def _static_default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    factory: Any = info.default_factory
    if factory in _STATIC_FACTORIES:
        return factory()
    return PydanticUndefined


def _decimal_scale(avro_type: AvroType) -> int | None:
    if isinstance(avro_type, dict) and avro_type.get("logicalType") == "decimal":
        return int(avro_type["scale"])
    if isinstance(avro_type, list):
        return next((s for t in avro_type if (s := _decimal_scale(t)) is not None), None)
    return None


def _default_json(value: Any, avro_type: AvroType, where: str) -> Any:
    """Convert a Python default into Avro's JSON encoding of a default value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return (aware - _EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(value, dt.date):
        return (value - _EPOCH.date()).days
    if isinstance(value, dt.time):
        return (value.hour * 3600 + value.minute * 60 + value.second) * 1000 + (
            value.microsecond // 1000
        )
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, decimal.Decimal):
        scale = _decimal_scale(avro_type)
        if scale is None:
            raise SchemaGenerationError(f"{where}: Decimal default without a decimal type")
        unscaled = int(value.scaleb(scale))
        size = max(1, (unscaled.bit_length() + 8) // 8)
        return unscaled.to_bytes(size, "big", signed=True).decode("latin-1")
    if isinstance(value, BaseModel):
        return {k: _default_json(v, avro_type, where) for k, v in value}
    if isinstance(value, list | tuple | set | frozenset):
        return [_default_json(v, avro_type, where) for v in value]
    if isinstance(value, dict):
        return {k: _default_json(v, avro_type, where) for k, v in value.items()}
    raise SchemaGenerationError(f"{where}: default {value!r} has no Avro JSON form")
