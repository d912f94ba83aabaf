"""Avro schema compatibility, as the schema registry and ``streamfold schemas check`` judge it.

The rules themselves are Apache Avro's (``avro.compatibility``, the port of the Java
``SchemaCompatibility`` that Confluent's registry uses); this module maps the registry's levels
onto reader/writer checks and turns each incompatibility into a message that names the field,
the rule and the version it breaks against:

- ``BACKWARD``: the new schema (reader) reads what the old ones (writers) wrote;
- ``FORWARD``: the old schemas read what the new one writes;
- ``FULL``: both; ``NONE``: no check;
- without ``_TRANSITIVE`` the new schema is checked against the latest live version only,
  with it against every live version.

Schemas are parsed with :func:`parse_schema`, which resolves Confluent schema references:
the referenced schemas' named types are defined first, so the main schema can use them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import avro.errors
import avro.name
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
)

from streamfold.errors import PermanentError

__all__ = [
    "CompatibilityLevel",
    "Incompatibility",
    "InvalidSchemaError",
    "check_compatibility",
    "parse_schema",
]


class InvalidSchemaError(PermanentError):
    """The text is not a valid Avro schema (or a reference cannot be resolved)."""


class CompatibilityLevel(StrEnum):
    """The compatibility levels of the Confluent Schema Registry."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def transitive(self) -> bool:
        """Whether the new schema is checked against every live version, not the latest."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """Whether the new schema must read what older ones wrote."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Whether older schemas must read what the new one writes."""
        return self.value.startswith(("FORWARD", "FULL"))


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One rule the new schema breaks against one existing version."""

    error_type: str  # READER_FIELD_MISSING_DEFAULT_VALUE, TYPE_MISMATCH, ...
    field: str  # dotted path of the field ("" for the root), e.g. ``price`` or ``line.qty``
    location: str  # the JSON-pointer-like path Avro reports, e.g. ``/fields/1/type``
    description: str
    version: int  # the existing version it breaks against
    direction: str  # "BACKWARD" (new reads old) or "FORWARD" (old reads new)

    def __str__(self) -> str:
        where = f"field {self.field!r}" if self.field else "the root schema"
        return (
            f"{self.direction}: {where} breaks {self.error_type} against version "
            f"{self.version}: {self.description}"
        )

    def confluent_message(self) -> str:
        """Render in the shape Confluent's registry uses for verbose compatibility answers."""
        return (
            f"{{errorType:'{self.error_type}', description:'{self.description}', "
            f"additionalInfo:'{self.field}', oldSchemaVersion:{self.version}}}"
        )


def parse_schema(text: str, references: Sequence[str] = ()) -> avro.schema.Schema:
    """Parse Avro schema ``text``, with the named types of ``references`` already defined.

    ``references`` are the referenced schemas' texts, dependencies first (as the registry
    resolves them). Raises :class:`InvalidSchemaError` naming what is wrong.
    """
    names = avro.name.Names()
    try:
        for reference in references:
            avro.schema.make_avsc_object(json.loads(reference), names)
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(f"schema is not valid JSON: {exc}") from exc
    except (avro.errors.AvroException, TypeError, ValueError, KeyError) as exc:
        raise InvalidSchemaError(f"a referenced schema is invalid: {exc}") from exc
    try:
        return avro.schema.make_avsc_object(data, names)
    except (avro.errors.AvroException, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc


def check_compatibility(
    level: CompatibilityLevel,
    new: avro.schema.Schema,
    existing: Sequence[tuple[int, avro.schema.Schema]],
) -> list[Incompatibility]:
    """Every incompatibility of ``new`` with the ``existing`` live (version, schema) pairs.

    ``existing`` is in version order; the latest version is last. ``[]`` means compatible.
    """
    if level is CompatibilityLevel.NONE or not existing:
        return []
    against = existing if level.transitive else existing[-1:]
    problems: list[Incompatibility] = []
    for version, old in reversed(against):
        if level.backward:
            problems.extend(_pair(new, old, version, "BACKWARD", reader_is_new=True))
        if level.forward:
            problems.extend(_pair(old, new, version, "FORWARD", reader_is_new=False))
    return problems


def _pair(
    reader: avro.schema.Schema,
    writer: avro.schema.Schema,
    version: int,
    direction: str,
    *,
    reader_is_new: bool,
) -> list[Incompatibility]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro is untyped here
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    # Avro merges the findings of one pair into sets; pair them back where it is unambiguous.
    kinds = [kind.value.upper() for kind in result.incompatibilities] or ["INCOMPATIBLE"]
    # Avro also reports the root ("/") for a mismatch found below it: keep the deeper paths.
    locations = sorted(result.locations - {"/"}) or ["/"]
    messages = sorted(result.messages)
    problems = []
    for index, kind in enumerate(kinds):
        location = locations[min(index, len(locations) - 1)] if locations else "/"
        message = messages[min(index, len(messages) - 1)] if messages else kind
        field = _field_path(reader, location)
        problems.append(
            Incompatibility(
                error_type=kind,
                field=field,
                location=location,
                description=_describe(kind, field, message, reader_is_new=reader_is_new),
                version=version,
                direction=direction,
            )
        )
    return problems


def _describe(kind: str, field: str, message: str, *, reader_is_new: bool) -> str:
    new, old = ("new", "old") if reader_is_new else ("old", "new")
    if kind == "READER_FIELD_MISSING_DEFAULT_VALUE":
        return (
            f"the field {field!r} in the {new} schema has no default value "
            f"and is missing in the {old} schema"
        )
    if kind == "TYPE_MISMATCH":
        return f"the type of {field or 'the root'} changed: {message} ({new} schema reads {old})"
    return f"{message} ({new} schema reads {old})"


def _field_path(schema: avro.schema.Schema, location: str) -> str:
    """Turn Avro's ``/fields/1/type/items/fields/0`` into ``line.qty`` by walking ``schema``."""
    names: list[str] = []
    current: Any = schema
    parts = [part for part in location.split("/") if part]
    index = 0
    while index < len(parts):
        part = parts[index]
        if part == "fields" and index + 1 < len(parts) and hasattr(current, "fields"):
            position = int(parts[index + 1])
            if position >= len(current.fields):
                break
            field = current.fields[position]
            names.append(field.name)
            current = field.type
            index += 2
            continue
        if part == "items" and hasattr(current, "items"):
            current = current.items
        elif part == "values" and hasattr(current, "values"):
            current = current.values
        elif part.isdigit() and hasattr(current, "schemas"):
            branches = current.schemas
            position = int(part)
            if position >= len(branches):
                break
            current = branches[position]
        index += 1
    return ".".join(names)
