"""The codec on hostile input: whatever the bytes or the dict, only its documented errors.

Decoding raises a :class:`CodecError` subclass (the worker maps each to a dead-letter
reason) or returns a record; encoding raises :class:`EncodeError` or returns bytes that
decode back. Any other exception would crash a worker's loop instead of dead-lettering.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfold.contracts import AvroCodec, InMemorySchemaRegistry
from streamfold.contracts.codec import CodecError, EncodeError, RecordReader, RecordWriter
from streamfold.testing.pytest_plugin import scaled
from tests.unit.contracts.models import NS, Everything, Inner
from tests.unit.contracts.test_codec import everything

pytestmark = pytest.mark.unit

TOPIC = "fuzz.thing.events"
#: Examples per property: 500 at full scale (STREAMFOLD_TEST_SCALE=1.0), CI runs 0.2.
EXAMPLES = scaled(500, float(os.environ.get("STREAMFOLD_TEST_SCALE", "1.0")), 100)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Pair:
    """A writer and readers over one in-memory registry (built once: hypothesis reruns)."""

    def __init__(self) -> None:
        codec = AvroCodec(InMemorySchemaRegistry())
        self.writer: RecordWriter[Everything] = codec.writer(TOPIC, Everything, NS)
        self.inner_writer: RecordWriter[Inner] = codec.writer(TOPIC, Inner, NS)
        self.typed: RecordReader = codec.reader(Everything, namespace=NS)
        self.untyped: RecordReader = codec.reader()


PAIR = Pair()


def decode_everything_way(data: bytes) -> None:
    """Decode ``data`` by every reader path; only a CodecError may come out."""
    for attempt in (
        lambda: PAIR.typed.decode(data),
        lambda: PAIR.typed.decode_as(data, Everything),
        lambda: PAIR.typed.decode_dict(data),
        lambda: PAIR.untyped.decode_dict(data),
    ):
        with contextlib.suppress(CodecError):
            attempt()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid ``Everything`` (or ``Inner``) record with bytes flipped, cut or inserted."""
    if draw(st.booleans()):
        data = bytearray(PAIR.writer.encode(draw(everything)))
    else:
        data = bytearray(PAIR.inner_writer.encode(Inner(label=draw(st.text()), weight=1.5)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if action == "flip" and where < len(data):
            data[where] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[where : where + draw(st.integers(1, 8))]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[where:]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_a_codec_error(data: bytes) -> None:
    decode_everything_way(data)


@FUZZ
@given(st.binary(max_size=40).map(lambda tail: b"\x00\x00\x00\x00\x01" + tail))
def test_bytes_behind_a_known_schema_id_decode_or_raise_a_codec_error(data: bytes) -> None:
    decode_everything_way(data)


@FUZZ
@given(mutated())
def test_mutated_records_decode_or_raise_a_codec_error(data: bytes) -> None:
    decode_everything_way(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@st.composite
def bent_records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record dict with some fields dropped, retyped or added."""
    record: dict[str, Any] = draw(everything).model_dump(mode="python")
    for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
        if draw(st.booleans()):
            record.pop(name, None)
        else:
            record[name] = draw(json_values)
    record.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return record


@FUZZ
@given(bent_records())
def test_bent_dicts_encode_or_raise_an_encode_error(record: dict[str, Any]) -> None:
    try:
        data = PAIR.writer.encode_dict(record)
    except EncodeError:
        return
    PAIR.typed.decode_dict(data)  # what was written must read back
