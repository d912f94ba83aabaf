"""Backpressure: a full local queue is waited out, never raised to the caller."""

from __future__ import annotations

from typing import Any

import pytest

from streamfold.transport.producing import DRAIN_S, produce

pytestmark = pytest.mark.unit


class _FullThenRoomy:
    """A producer whose queue is full for its first ``full`` attempts."""

    def __init__(self, full: int) -> None:
        self.full = full
        self.calls: list[tuple[str, Any]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
        self.calls.append(("produce", (topic, value, key, kwargs)))
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")

    def poll(self, timeout: float) -> int:
        self.calls.append(("poll", timeout))
        return 0


def test_a_full_queue_serves_deliveries_until_the_record_is_queued() -> None:
    producer = _FullThenRoomy(full=2)
    produce(producer, "t", b"v", b"k", partition=3)  # type: ignore[arg-type]
    attempt = ("produce", ("t", b"v", b"k", {"partition": 3}))
    assert producer.calls == [attempt, ("poll", DRAIN_S), attempt, ("poll", DRAIN_S), attempt]


def test_a_queue_with_room_takes_the_record_at_once() -> None:
    producer = _FullThenRoomy(full=0)
    produce(producer, "t", None, None)  # type: ignore[arg-type]
    assert producer.calls == [("produce", ("t", None, None, {}))]
