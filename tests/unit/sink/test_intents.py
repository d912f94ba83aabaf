"""The sink's intents: what a partition's committed offset metadata says was being inserted."""

from __future__ import annotations

import pytest

from streamfold.sink.batches import Intent, intended_last, intent, parse_intent

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "found",
    [Intent(41), Intent(0), Intent(1_000_000, "3f2a9c0d1e2f3a4b5c6d", 6)],
)
def test_an_intent_reads_back_as_written(found: Intent) -> None:
    assert parse_intent(found.metadata()) == found
    assert intended_last(found.metadata()) == found.last


def test_a_range_of_its_own_keeps_the_metadata_of_earlier_versions() -> None:
    assert intent(41) == "streamfold.sink:41"
    assert parse_intent("streamfold.sink:41") == Intent(41)


@pytest.mark.parametrize("metadata", [None, "", "something else", "streamfold.sinks:3"])
def test_other_metadata_is_no_intent(metadata: str | None) -> None:
    assert parse_intent(metadata) is None
    assert intended_last(metadata) is None
