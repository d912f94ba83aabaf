"""The sink's intents: what a partition's committed offset metadata says was being inserted."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from streamfold.sink.batches import Intent, intended_last, intent, parse_intent
from streamfold.sink.connector import commit_refusal

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


@pytest.mark.parametrize(
    ("code", "what"),
    [
        (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "retry"),
        (KafkaError.NOT_COORDINATOR, "retry"),
        (KafkaError._WAIT_COORD, "retry"),  # stopped the sink under broker loss
        (KafkaError._TRANSPORT, "retry"),
        (KafkaError.ILLEGAL_GENERATION, "moved-on"),
        (KafkaError.UNKNOWN_MEMBER_ID, "moved-on"),
        (KafkaError.REBALANCE_IN_PROGRESS, "moved-on"),
        (KafkaError._ASSIGNMENT_LOST, "moved-on"),
        (KafkaError.FENCED_INSTANCE_ID, "fail"),  # another sink runs with this instance id
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "fail"),
    ],
)
def test_an_offset_commit_refusal_is_retried_left_to_the_replay_or_fatal(
    code: int, what: str
) -> None:
    assert commit_refusal(KafkaError(code)) == what
