"""The outcome book's waits, without Kafka: counted as they open and close, woken by outcomes."""

from __future__ import annotations

import asyncio

import pytest

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.gateway.outcomes import Answer, OutcomeBook, Stage
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.unit


def book() -> OutcomeBook:
    codec = AvroCodec(InMemorySchemaRegistry())
    return OutcomeBook(KafkaSettings(), codec, ["r.a.results"], "r.projected", recent=1000)


def answer() -> Answer:
    record = {"outcome": "accepted", "version": 1, "aggregate_type": "a", "event_types": ["E"]}
    return Answer.of(record)


def test_waits_are_counted_while_open_and_an_outcome_wakes_only_its_own() -> None:
    outcomes = book()

    async def run() -> None:
        with outcomes.register("c1", Stage.PROCESSED) as first:
            with outcomes.register("c1", Stage.PROJECTED), outcomes.register("c2", Stage.SENT):
                assert outcomes.open_waits == 3
            assert outcomes.open_waits == 1
            outcomes._apply([("c1", answer(), None), ("c9", answer(), "t")])
            known = await asyncio.wait_for(first.changed(5), 1)
            assert known is not None and known.stage is Stage.PROCESSED
        assert outcomes.open_waits == 0
        known = outcomes.known("c9")
        assert known is not None and known.tenant == "t"

    asyncio.run(run())


def test_a_release_wakes_every_wait_and_stops_new_sends() -> None:
    outcomes = book()

    async def run() -> None:
        with outcomes.register("c1", Stage.PROJECTED) as wait:
            outcomes.release()
            assert await asyncio.wait_for(wait.changed(5), 1) is None
        assert outcomes.stopping and outcomes.open_waits == 0

    asyncio.run(run())
