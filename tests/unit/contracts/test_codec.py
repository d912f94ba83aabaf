"""The Confluent wire codec: round trips, schema evolution and typed errors."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, PositiveInt

from streamfold.contracts import (
    AvroCodec,
    Contract,
    EncodeError,
    InMemorySchemaRegistry,
    ModelInvalidError,
    TruncatedPayloadError,
    UndecodablePayloadError,
    UnknownMagicByteError,
    UnknownRecordTypeError,
    UnknownSchemaIdError,
)
from streamfold.errors import ConfigurationError, PermanentError
from tests.unit.contracts.models import NS, Colour, Everything, Inner

pytestmark = pytest.mark.unit

TOPIC = "test.thing.events"

# --- strategies: values that survive Avro exactly (millisecond clocks, scaled decimals) ----

texts = st.text(max_size=20)
aware = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
clocks = st.times().map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
prices = st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)
inners = st.builds(Inner, label=texts, weight=floats)

EVERYTHING = dict(
    flag=st.booleans(),
    count=longs,
    ratio=floats,
    text=texts,
    blob=st.binary(max_size=20),
    at=aware,
    day=st.dates(),
    clock=clocks,
    price=prices,
    ident=st.uuids(),
    colour=st.sampled_from(Colour),
    kind=st.sampled_from(["a", "b"]),
    inner=inners,
    inners=st.lists(inners, max_size=3),
    by_name=st.dictionaries(texts, inners, max_size=3),
    numbers=st.lists(longs, max_size=3).map(tuple),
    tags=st.sets(texts, max_size=3),
    maybe=st.none() | texts,
    maybe_inner=st.none() | inners,
    either=longs | texts,
)
everything = st.builds(Everything, **EVERYTHING)


def codec() -> AvroCodec:
    return AvroCodec(InMemorySchemaRegistry())


@settings(max_examples=200)
@given(everything)
def test_models_round_trip_through_the_wire_format(model: Everything) -> None:
    c = codec()
    data = c.writer(TOPIC, Everything, NS).encode(model)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
    decoded = c.reader(Everything, namespace=NS).decode_as(data, Everything)
    assert decoded == model


@settings(max_examples=100)
@given(everything)
def test_dict_fast_path_round_trips(model: Everything) -> None:
    c = codec()
    record = model.model_dump()
    data = c.writer(TOPIC, Everything, NS).encode_dict(record)
    name, decoded = c.reader(Everything, namespace=NS).decode_dict(data)
    assert name == f"{NS}.Everything"
    assert Everything.model_validate(decoded) == model


def test_a_string_that_is_no_uuid_is_refused_not_written() -> None:
    """fastavro alone writes it, and no reader can read the record back (found by
    tests/unit/fuzz/test_codec_fuzz.py)."""
    c = codec()
    record = Everything(
        flag=True,
        count=1,
        ratio=0.5,
        text="t",
        blob=b"b",
        at=dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
        day=dt.date(2026, 12, 4),
        clock=dt.time(12, 0),
        price=Decimal("1.25"),
        ident=uuid.uuid4(),
        inner=Inner(label="i", weight=1.0),
    ).model_dump()
    record["ident"] = "not-a-uuid"
    with pytest.raises(EncodeError, match="badly formed hexadecimal UUID string"):
        c.writer(TOPIC, Everything, NS).encode_dict(record)
    record["ident"] = "12345678123456781234567812345678"  # a UUID's hex, read back as one
    data = c.writer(TOPIC, Everything, NS).encode_dict(record)
    assert c.reader(Everything, namespace=NS).decode_as(data, Everything).ident.int > 0


# --- schema evolution -------------------------------------------------------------------


class SaleV1(BaseModel):
    sale_id: str
    quantity: int
    note: str


class SaleV2(BaseModel):
    sale_id: str
    quantity: int
    note: str
    channel: str = "store"


class SaleV3(BaseModel):
    sale_id: str
    quantity: int


def renamed(model: type[BaseModel]) -> type[BaseModel]:
    """The same record name across versions, as an evolving model would have."""
    model.__name__ = "Sale"
    return model


V1, V2, V3 = renamed(SaleV1), renamed(SaleV2), renamed(SaleV3)


def test_a_v1_record_decodes_with_a_v2_reader_that_added_a_defaulted_field() -> None:
    registry = InMemorySchemaRegistry()
    old = AvroCodec(registry).writer(TOPIC, V1, NS).encode(V1(sale_id="s", quantity=2, note="n"))
    new_reader = AvroCodec(registry).reader(V2, namespace=NS)
    assert new_reader.decode(old) == V2(sale_id="s", quantity=2, note="n", channel="store")


def test_a_reader_that_removed_a_field_still_reads_v1_records() -> None:
    registry = InMemorySchemaRegistry()
    old = AvroCodec(registry).writer(TOPIC, V1, NS).encode(V1(sale_id="s", quantity=2, note="n"))
    assert AvroCodec(registry).reader(V3, namespace=NS).decode(old) == V3(sale_id="s", quantity=2)


def test_a_v2_record_decodes_with_the_v1_reader() -> None:
    registry = InMemorySchemaRegistry()
    new = AvroCodec(registry).writer(TOPIC, V2, NS).encode(V2(sale_id="s", quantity=2, note="n"))
    assert AvroCodec(registry).reader(V1, namespace=NS).decode(new) == V1(
        sale_id="s", quantity=2, note="n"
    )


def test_writer_schema_is_fetched_once_from_the_registry() -> None:
    registry = InMemorySchemaRegistry()
    data = AvroCodec(registry).writer(TOPIC, V1, NS).encode(V1(sale_id="s", quantity=1, note=""))
    calls: list[int] = []
    fetch = registry.get_schema

    def counting(schema_id: int) -> str:
        calls.append(schema_id)
        return fetch(schema_id)

    registry.get_schema = counting  # type: ignore[method-assign]
    reader = AvroCodec(registry).reader()
    for _ in range(3):
        assert reader.decode_dict(data) == (
            f"{NS}.Sale",
            {"sale_id": "s", "quantity": 1, "note": ""},
        )
    assert calls == [1]


# --- errors -----------------------------------------------------------------------------


class Small(BaseModel):
    name: str
    count: PositiveInt


class Other(BaseModel):
    x: int


def small_bytes(c: AvroCodec) -> bytes:
    return c.writer(TOPIC, Small, NS).encode(Small(name="abc", count=3))


@pytest.mark.parametrize(
    ("mangle", "error", "match"),
    [
        (lambda b: b[:3], TruncatedPayloadError, "3 bytes is shorter than the header"),
        (lambda b: b"\x01" + b[1:], UnknownMagicByteError, "magic byte is 1"),
        (lambda b: b[:1] + (99).to_bytes(4, "big") + b[5:], UnknownSchemaIdError, "id 99"),
        (lambda b: b[:-1], TruncatedPayloadError, "ends inside a io.test.contracts.Small"),
        (lambda b: b + b"\x00", UndecodablePayloadError, "1 trailing bytes"),
        (lambda b: b[:5] + b"\x06\xff\xfe\xfd\x06", UndecodablePayloadError, "does not decode"),
    ],
)
def test_bad_payloads_raise_typed_errors(mangle: object, error: type, match: str) -> None:
    c = codec()
    data = mangle(small_bytes(c))  # type: ignore[operator]
    with pytest.raises(error, match=match):
        c.reader(Small, namespace=NS).decode(data)
    assert issubclass(error, PermanentError)


def test_a_record_that_breaks_its_model_is_model_invalid() -> None:
    c = codec()
    data = c.writer(TOPIC, Small, NS).encode_dict({"name": "abc", "count": -1})
    with pytest.raises(ModelInvalidError, match=r"io\.test\.contracts\.Small does not validate"):
        c.reader(Small, namespace=NS).decode(data)


def test_a_reader_refuses_record_types_it_does_not_know() -> None:
    c = codec()
    data = small_bytes(c)
    with pytest.raises(UnknownRecordTypeError, match=r"accepts io\.test\.contracts\.Other"):
        c.reader(Other, namespace=NS).decode(data)
    with pytest.raises(UnknownRecordTypeError, match="reader has no model"):
        c.reader().decode(data)
    with pytest.raises(UnknownRecordTypeError, match="expected a Other record, got Small"):
        c.reader(Small, Other, namespace=NS).decode_as(data, Other)


def test_encoding_a_record_that_does_not_fit_names_the_schema() -> None:
    with pytest.raises(EncodeError, match=r"does not fit io\.test\.contracts\.Small"):
        codec().writer(TOPIC, Small, NS).encode_dict({"name": "abc"})


def test_reader_needs_the_namespace_of_its_models() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        codec().reader(Small)


def test_a_registry_schema_that_is_not_a_record_is_undecodable() -> None:
    registry = InMemorySchemaRegistry()
    schema_id = registry.register("x", '"string"')
    with pytest.raises(UndecodablePayloadError, match="not an Avro record"):
        AvroCodec(registry).reader().decode_dict(b"\x00" + schema_id.to_bytes(4, "big") + b"\x00")


def test_without_auto_register_the_subject_must_hold_the_schema() -> None:
    registry = InMemorySchemaRegistry()
    subject = f"{TOPIC}-{NS}.Small"
    registry.register(subject, json.dumps(Contract.of(Other, NS).schema))
    strict = AvroCodec(registry, auto_register=False)
    with pytest.raises(EncodeError, match="register it first"):
        strict.writer(TOPIC, Small, NS)
    schema_id = registry.register(subject, Contract.of(Small, NS).schema_str)
    assert strict.writer(TOPIC, Small, NS).schema_id == schema_id
