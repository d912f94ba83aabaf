"""Avro schema generation from pydantic models."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Annotated, Literal

import fastavro
import pytest
from pydantic import BaseModel, Field

from streamfold.contracts import SchemaGenerationError, avro_schema, canonical_json
from tests.unit.contracts.models import NS, Colour, Everything, Inner

pytestmark = pytest.mark.unit


def fields(model: type[BaseModel]) -> dict[str, dict[str, object]]:
    return {f["name"]: f for f in avro_schema(model, NS)["fields"]}


def test_every_supported_type_maps_faithfully() -> None:
    schema = avro_schema(Everything, NS)
    assert (schema["name"], schema["namespace"], schema["doc"]) == (
        "Everything",
        NS,
        "One field of every supported type.",
    )
    f = fields(Everything)
    assert f["flag"]["type"] == "boolean"
    assert f["count"] == {"name": "count", "type": "long", "doc": "How many."}
    assert f["ratio"]["type"] == "double"
    assert f["text"]["type"] == "string"
    assert f["blob"]["type"] == "bytes"
    assert f["at"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert f["day"]["type"] == {"type": "int", "logicalType": "date"}
    assert f["clock"]["type"] == {"type": "int", "logicalType": "time-millis"}
    assert f["price"]["type"] == {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": 10,
        "scale": 2,
    }
    assert f["ident"]["type"] == {"type": "string", "logicalType": "uuid"}
    assert f["colour"] == {
        "name": "colour",
        "type": {"type": "enum", "name": "Colour", "doc": "A colour.", "symbols": ["red", "blue"]},
        "default": "red",
    }
    assert f["kind"] == {"name": "kind", "type": "string", "default": "a"}
    assert f["inner"]["type"] == {
        "type": "record",
        "name": "Inner",
        "doc": "A nested record.",
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "weight", "type": "double", "default": 1.0},
        ],
    }
    # Defined once, then referenced by name.
    assert f["inners"] == {
        "name": "inners",
        "type": {"type": "array", "items": "Inner"},
        "default": [],
    }
    assert f["by_name"]["type"] == {"type": "map", "values": "Inner"}
    assert f["numbers"]["type"] == {"type": "array", "items": "long"}
    assert f["tags"] == {
        "name": "tags",
        "type": {"type": "array", "items": "string"},
        "default": [],
    }
    assert f["maybe"] == {"name": "maybe", "type": ["null", "string"], "default": None}
    assert f["maybe_inner"]["type"] == ["null", "Inner"]
    assert f["either"] == {"name": "either", "type": ["long", "string"], "default": 0}
    fastavro.parse_schema(schema)  # and it is valid Avro


def test_output_is_canonical_and_deterministic() -> None:
    text = canonical_json(avro_schema(Everything, NS))
    assert text == canonical_json(avro_schema(Everything, NS))
    assert text.endswith("}\n") and text.startswith('{\n  "type": "record",\n  "name"')
    assert json.loads(text) == avro_schema(Everything, NS)


def test_a_non_null_default_puts_its_branch_first() -> None:
    class M(BaseModel):
        x: int | None = 3

    assert fields(M)["x"] == {"name": "x", "type": ["long", "null"], "default": 3}


def test_defaults_are_written_in_avro_json_form() -> None:
    class M(BaseModel):
        at: dt.datetime = dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
        naive: dt.datetime = dt.datetime(1970, 1, 1, 0, 0, 2)
        day: dt.date = dt.date(1970, 1, 3)
        clock: dt.time = dt.time(0, 0, 1, 500_000)
        ident: uuid.UUID = uuid.UUID(int=1)
        blob: bytes = b"\x00\xff"
        price: Annotated[Decimal, Field(max_digits=6, decimal_places=2)] = Decimal("1.28")
        maybe_price: Annotated[Decimal | None, Field(max_digits=6, decimal_places=2)] = Decimal(
            "-1"
        )
        inner: Inner = Inner(label="x")
        many: list[Colour] = [Colour.blue]
        by_key: dict[str, int] = {"a": 1}
        generated: uuid.UUID = Field(default_factory=uuid.uuid4)

    f = fields(M)
    assert f["at"]["default"] == 1000
    assert f["naive"]["default"] == 2000
    assert f["day"]["default"] == 2
    assert f["clock"]["default"] == 1500
    assert f["ident"]["default"] == "00000000-0000-0000-0000-000000000001"
    assert f["blob"]["default"] == "\x00\xff"
    assert f["price"]["default"] == "\x00\x80"  # 128 as big-endian two's complement
    assert f["maybe_price"]["default"] == "\x9c"  # -100
    assert f["inner"]["default"] == {"label": "x", "weight": 1.0}
    assert f["many"]["default"] == ["blue"]
    assert f["by_key"]["default"] == {"a": 1}
    assert "default" not in f["generated"]  # not static: a default would be a lie
    fastavro.parse_schema(avro_schema(M, NS))


def test_recursive_models_reference_themselves() -> None:
    class Node(BaseModel):
        name: str
        children: list[Node] = []

    Node.model_rebuild()
    assert fields(Node)["children"]["type"] == {"type": "array", "items": "Node"}
    fastavro.parse_schema(avro_schema(Node, NS))


class PlainEnum(Enum):
    A = "a"


class BadSymbols(StrEnum):
    A = "not an identifier"


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        (Decimal, "needs max_digits and decimal_places"),
        (PlainEnum, "must be a StrEnum"),
        (BadSymbols, "must be a StrEnum whose values are identifiers"),
        (dict[int, str], "map keys are strings"),
        (Literal[1, 2], "only string Literals"),
        (complex, "has no Avro mapping"),
    ],
)
def test_unsupported_types_name_the_field(annotation: object, match: str) -> None:
    model = type("Bad", (BaseModel,), {"__annotations__": {"field": annotation}})
    with pytest.raises(SchemaGenerationError, match=rf"Bad\.field: .*{match}"):
        avro_schema(model, NS)


def test_unsupported_default_names_the_field() -> None:
    class M(BaseModel):
        model_config = {"arbitrary_types_allowed": True}
        price: Annotated[Decimal, Field(max_digits=4, decimal_places=1)] = Decimal(1)
        colours: list[Colour] = Field(default_factory=lambda: [Colour.red])

    assert "default" not in fields(M)["colours"]

    class N(BaseModel):
        value: int | str = Field(default=object())  # type: ignore[assignment]

    with pytest.raises(SchemaGenerationError, match=r"N\.value: default"):
        avro_schema(N, NS)


def test_decimal_default_needs_a_decimal_type() -> None:
    class M(BaseModel):
        value: float = Decimal("1.5")  # type: ignore[assignment]

    with pytest.raises(SchemaGenerationError, match=r"M\.value: Decimal default"):
        avro_schema(M, NS)
