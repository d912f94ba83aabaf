"""Compatibility levels over Apache Avro's rules, and messages that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamfold.contracts.compatibility import (
    CompatibilityLevel,
    InvalidSchemaError,
    check_compatibility,
    parse_schema,
)

pytestmark = pytest.mark.unit


def item(*fields: dict[str, Any]) -> Any:
    return parse_schema(json.dumps({"type": "record", "name": "Item", "fields": list(fields)}))


SKU = {"name": "sku", "type": "string"}
PRICE = {"name": "price", "type": "long"}
NOTE_DEFAULT = {"name": "note", "type": "string", "default": ""}
NOTE = {"name": "note", "type": "string"}
LINE = {
    "name": "line",
    "type": {"type": "record", "name": "Line", "fields": [{"name": "qty", "type": "int"}]},
}
LINE_LONG = {
    "name": "line",
    "type": {"type": "record", "name": "Line", "fields": [{"name": "qty", "type": "string"}]},
}


@pytest.mark.parametrize(
    ("level", "new", "breaks"),
    [
        (CompatibilityLevel.BACKWARD, item(SKU, PRICE, NOTE_DEFAULT), []),
        (CompatibilityLevel.BACKWARD, item(SKU, PRICE, NOTE), [("BACKWARD", "note")]),
        (CompatibilityLevel.BACKWARD, item(SKU), []),
        (CompatibilityLevel.FORWARD, item(SKU), [("FORWARD", "price")]),
        (CompatibilityLevel.FULL, item(SKU, PRICE, NOTE_DEFAULT), []),
        (CompatibilityLevel.NONE, item(SKU), []),
        (
            CompatibilityLevel.FULL,
            item(SKU, {"name": "price", "type": "string"}),
            [("BACKWARD", "price"), ("FORWARD", "price")],
        ),
    ],
)
def test_levels(level: CompatibilityLevel, new: Any, breaks: list[tuple[str, str]]) -> None:
    problems = check_compatibility(level, new, [(1, item(SKU, PRICE))])
    assert [(p.direction, p.field) for p in problems] == breaks


def test_transitive_checks_every_version_plain_only_the_latest() -> None:
    history = [(1, item(SKU, PRICE)), (2, item(SKU))]
    new = item(SKU, {"name": "price", "type": "string", "default": ""})
    assert check_compatibility(CompatibilityLevel.BACKWARD, new, history) == []
    (problem,) = check_compatibility(CompatibilityLevel.BACKWARD_TRANSITIVE, new, history)
    assert (problem.version, problem.field, problem.error_type) == (1, "price", "TYPE_MISMATCH")
    assert "field 'price' breaks TYPE_MISMATCH against version 1" in str(problem)


def test_nested_fields_are_named_by_path() -> None:
    (problem,) = check_compatibility(
        CompatibilityLevel.BACKWARD, item(SKU, LINE_LONG), [(3, item(SKU, LINE))]
    )
    assert problem.field == "line.qty"
    assert "additionalInfo:'line.qty'" in problem.confluent_message()


@pytest.mark.parametrize(
    "text", ["{", '{"type": "record"}', '{"type": "recrd", "name": "X"}', '"nothing"']
)
def test_invalid_schemas_raise_one_error(text: str) -> None:
    with pytest.raises(InvalidSchemaError):
        parse_schema(text)


def test_references_define_named_types_first() -> None:
    money = json.dumps({"type": "record", "name": "Money", "namespace": "m", "fields": [PRICE]})
    uses = json.dumps({"type": "record", "name": "P", "fields": [{"name": "a", "type": "m.Money"}]})
    assert parse_schema(uses, [money]).fields[0].type.fullname == "m.Money"
    with pytest.raises(InvalidSchemaError):
        parse_schema(uses)
