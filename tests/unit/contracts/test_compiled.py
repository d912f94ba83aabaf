"""Compiled Avro writers write exactly the bytes fastavro writes, or leave the record to it."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, Field
from topologies.retail.domain import retail

from streamfold.contracts import AvroCodec, Contract, EncodeError, InMemorySchemaRegistry
from streamfold.contracts.avro import avro_schema
from streamfold.contracts.compiled import compile_reader, compile_writer
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from tests.unit.contracts.models import NS, Colour, Everything, Inner
from tests.unit.contracts.test_codec import (
    EVERYTHING,
    aware,
    longs,
    texts,
)

pytestmark = pytest.mark.unit


class Compilable(BaseModel):
    """Every supported type but the two-branch union, which stays with fastavro."""

    flag: bool
    count: int
    ratio: float
    text: str
    blob: bytes
    at: AwareDatetime
    naive: dt.datetime
    day: dt.date
    clock: dt.time
    price: Annotated[Decimal, Field(max_digits=10, decimal_places=2)]
    ident: uuid.UUID
    colour: Colour = Colour.red
    kind: Literal["a", "b"] = "a"
    inner: Inner
    inners: list[Inner] = []
    by_name: dict[str, Inner] = {}
    numbers: tuple[int, ...] = ()
    tags: set[str] = Field(default_factory=set)
    maybe: str | None = None
    maybe_count: int | None = 5
    maybe_inner: Inner | None = None
    maybe_at: AwareDatetime | None = None


class Tree(BaseModel):
    """A recursive record: its children are trees."""

    name: str
    children: list[Tree] = []


compilables = st.builds(
    Compilable,
    **{name: values for name, values in EVERYTHING.items() if name != "either"},
    naive=st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    maybe_count=st.none() | longs,
    maybe_at=st.none() | aware,
)
trees = st.recursive(
    st.builds(Tree, name=texts),
    lambda children: st.builds(Tree, name=texts, children=st.lists(children, max_size=3)),
    max_leaves=8,
)


def fastavro_bytes(parsed: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def compiled_bytes(parsed: Any, record: dict[str, Any]) -> bytes:
    writer = compile_writer(parsed)
    assert writer is not None, "the schema should compile"
    out = bytearray()
    writer(record, out)
    return bytes(out)


@settings(max_examples=300)
@given(compilables)
def test_compiled_writer_writes_fastavros_bytes(model: Compilable) -> None:
    parsed = parse_schema(avro_schema(Compilable, NS))
    record = model.model_dump()
    assert compiled_bytes(parsed, record) == fastavro_bytes(parsed, record)


@settings(max_examples=100)
@given(trees)
def test_a_recursive_record_compiles_and_matches(tree: Tree) -> None:
    parsed = parse_schema(avro_schema(Tree, NS))
    record = tree.model_dump()
    assert compiled_bytes(parsed, record) == fastavro_bytes(parsed, record)


@pytest.mark.parametrize("value", [0, 1, -1, 8191, -8192, 8192, -8193, 2**31, 2**63 - 1, -(2**63)])
def test_longs_at_the_edges_of_the_precomputed_table(value: int) -> None:
    class Number(BaseModel):
        n: int

    parsed = parse_schema(avro_schema(Number, NS))
    assert compiled_bytes(parsed, {"n": value}) == fastavro_bytes(parsed, {"n": value})


def test_every_record_the_retail_worker_writes_is_compiled() -> None:
    contracts = [Contract.of(CommandResult, RESULT_NAMESPACE)]
    for aggregate in retail.aggregates:
        for model in (*aggregate.commands, *aggregate.events, aggregate.state_type):
            contracts.append(Contract.of(model, retail.namespace))
    assert [c.full_name for c in contracts if c.compiled is None] == []


def test_a_union_of_two_types_stays_with_fastavro() -> None:
    assert Contract.of(Everything, NS).compiled is None
    model = Everything.model_validate(
        {
            "flag": True,
            "count": 1,
            "ratio": 0.5,
            "text": "t",
            "blob": b"b",
            "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "day": dt.date(2026, 1, 1),
            "clock": dt.time(1, 2, 3),
            "price": Decimal("1.50"),
            "ident": uuid.uuid4(),
            "inner": {"label": "x"},
            "either": "text",
        }
    )
    codec = AvroCodec(InMemorySchemaRegistry())
    data = codec.writer("t.events", Everything, NS).encode(model)
    assert codec.reader(Everything, namespace=NS).decode_as(data, Everything) == model


def test_a_record_missing_a_defaulted_field_is_written_by_fastavro() -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    writer = codec.writer("t.results", CommandResult, RESULT_NAMESPACE)
    record = {
        "command_id": "c1",
        "aggregate_type": "store_stock",
        "outcome": "accepted",
        "processed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }  # request_id, version, event_types, ... take their defaults
    contract = Contract.of(CommandResult, RESULT_NAMESPACE)
    with pytest.raises(KeyError):
        compiled_bytes(contract.parsed, record)
    assert writer.encode_dict(record)[5:] == fastavro_bytes(contract.parsed, record)


@pytest.mark.parametrize(
    ("field", "value"),
    [("outcome", "exploded"), ("version", "seven"), ("command_id", 42), ("event_types", [1])],
)
def test_a_value_of_the_wrong_type_is_an_encode_error(field: str, value: Any) -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    writer = codec.writer("t.results", CommandResult, RESULT_NAMESPACE)
    record: dict[str, Any] = {
        "command_id": "c1",
        "request_id": None,
        "aggregate_type": "store_stock",
        "aggregate_id": "a",
        "command_type": "RecordSale",
        "outcome": "accepted",
        "version": 1,
        "event_types": ["SaleRecorded"],
        "code": None,
        "message": None,
        "duplicate": False,
        "processed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    writer.encode_dict(record)  # the record as it is fits
    record[field] = value
    with pytest.raises(EncodeError, match="CommandResult"):
        writer.encode_dict(record)


def test_a_union_with_a_non_null_default_puts_null_second() -> None:
    class Later(BaseModel):
        maybe: int | None = 5
        flag: Literal["x"] | None = "x"

    schema = avro_schema(Later, NS)
    assert schema["fields"][0]["type"] == ["long", "null"]
    parsed = parse_schema(schema)
    for record in ({"maybe": None, "flag": None}, {"maybe": 7, "flag": "x"}):
        assert compiled_bytes(parsed, record) == fastavro_bytes(parsed, record)


# --- readers -----------------------------------------------------------------------------


def fastavro_read(parsed: Any, data: bytes) -> Any:
    return schemaless_reader(io.BytesIO(data), parsed, None)


def compiled_read(parsed: Any, data: bytes) -> Any:
    reader = compile_reader(parsed)
    assert reader is not None, "the schema should compile"
    return reader(data, 0)


@settings(max_examples=300)
@given(compilables)
def test_compiled_reader_reads_what_fastavro_reads(model: Compilable) -> None:
    parsed = parse_schema(avro_schema(Compilable, NS))
    data = fastavro_bytes(parsed, model.model_dump())
    decoded = compiled_read(parsed, data)
    assert decoded == fastavro_read(parsed, data)
    assert list(decoded) == list(Compilable.model_fields)


@settings(max_examples=100)
@given(st.builds(Everything, **EVERYTHING))
def test_a_union_of_two_types_is_read_by_its_index(model: Everything) -> None:
    parsed = parse_schema(avro_schema(Everything, NS))
    data = fastavro_bytes(parsed, model.model_dump())
    assert compiled_read(parsed, data) == fastavro_read(parsed, data)


@settings(max_examples=100)
@given(trees)
def test_a_recursive_record_is_read(tree: Tree) -> None:
    parsed = parse_schema(avro_schema(Tree, NS))
    data = fastavro_bytes(parsed, tree.model_dump())
    assert compiled_read(parsed, data) == fastavro_read(parsed, data)


def test_blocks_with_a_byte_size_are_read() -> None:
    """Other writers may send array and map blocks as a negative count plus a byte size."""

    class Lists(BaseModel):
        numbers: list[int]
        names: dict[str, int]

    parsed = parse_schema(avro_schema(Lists, NS))
    # numbers: one block of -2 items (4 bytes: 1, 2) then a block of 1 item (3), then 0;
    # names: one block of -1 entry of 3 bytes ("a" -> 5), then 0.
    data = bytes([3, 4, 2, 4, 2, 6, 0, 1, 6, 2, ord("a"), 10, 0])
    assert compiled_read(parsed, data) == {"numbers": [1, 2, 3], "names": {"a": 5}}
    assert compiled_read(parsed, data) == fastavro_read(parsed, data)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"\x10abc",  # a string longer than the data
        b"\x06abc\x00\x00\x00\x00\x00",  # trailing bytes
        b"\x06abc\x01",  # a negative array count with no size
        b"\x06abc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a runaway varint
        b"\x05abc\x00",  # a negative string length
    ],
)
def test_the_compiled_reader_raises_on_bytes_that_are_not_the_record(data: bytes) -> None:
    parsed = parse_schema(avro_schema(Tree, NS))
    reader = compile_reader(parsed)
    assert reader is not None
    with pytest.raises(Exception):  # noqa: B017 - the codec falls back to fastavro
        reader(data, 0)


def test_an_enum_index_outside_its_symbols_is_not_read() -> None:
    class Painted(BaseModel):
        colour: Colour
        again: Colour

    parsed = parse_schema(avro_schema(Painted, NS))
    reader = compile_reader(parsed)
    assert reader is not None
    assert reader(b"\x00\x02", 0) == {"colour": "red", "again": "blue"}
    for data in (b"\x01\x00", b"\x00\x01", b"\x04\x00"):  # -1 (by definition, by name), 2
        with pytest.raises(Exception):  # noqa: B017 - the codec falls back to fastavro
            reader(data, 0)
