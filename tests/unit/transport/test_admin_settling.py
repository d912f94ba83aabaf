"""A topic just created is asked about again while a broker does not know it yet."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamfold.errors import StreamfoldError
from streamfold.transport.admin import KafkaAdmin

pytestmark = pytest.mark.unit


class _Client:
    """An admin client whose metadata knows the topic, and whose config lookups answer
    UNKNOWN_TOPIC_OR_PART ``unknown`` times first (another broker, not told yet)."""

    def __init__(self, unknown: int) -> None:
        self.unknown = unknown
        self.asked = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        partition = SimpleNamespace(id=0, leader=1, replicas=[1], isrs=[1])
        topic_md = SimpleNamespace(error=None, partitions={0: partition})
        return SimpleNamespace(topics={topic: topic_md})

    def describe_configs(self, resources: list[Any]) -> dict[Any, Future[Any]]:
        self.asked += 1
        future: Future[Any] = Future()
        if self.asked <= self.unknown:
            error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Broker: Unknown topic")
            future.set_exception(KafkaException(error))
        else:
            entry = SimpleNamespace(value="compact", is_default=False)
            future.set_result({"cleanup.policy": entry})
        return {resources[0]: future}


def _admin(client: _Client) -> KafkaAdmin:
    admin = KafkaAdmin.__new__(KafkaAdmin)  # no client of its own: it talks to the fake
    admin._client = client  # type: ignore[assignment]
    admin._timeout = 1.0
    return admin


def test_configs_unknown_to_the_broker_asked_are_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamfold.transport.admin.time.sleep", lambda _s: None)
    client = _Client(unknown=2)
    info = _admin(client).describe("t.changelog")
    assert info.config == {"cleanup.policy": "compact"}
    assert client.asked == 3


def test_a_topic_that_stays_unknown_is_still_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr("streamfold.transport.admin.time.sleep", sleep)
    monkeypatch.setattr("streamfold.transport.admin.time.monotonic", lambda: clock[0])
    with pytest.raises(StreamfoldError, match=r"describing configs of t\.changelog"):
        _admin(_Client(unknown=10**6)).describe("t.changelog")
