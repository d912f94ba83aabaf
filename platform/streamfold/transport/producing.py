"""Queueing a record on a librdkafka producer, with backpressure.

``Producer.produce`` raises :class:`BufferError` when the local queue is full
(``queue.buffering.max.messages`` / ``.kbytes``). That is backpressure, not a failure: every
streamfold producer (the worker's checkpoint, the sink's PROJECTED acks, the SDK's command
producer) then serves delivery reports until the queue has room, and queues the record.
Delivery errors arrive in the ``on_delivery`` callback each caller passes.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

__all__ = ["produce"]

#: How long one wait for the queue to drain serves delivery reports.
DRAIN_S = 0.05


def produce(
    producer: Producer, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any
) -> None:
    """Queue one record (``kwargs``: ``partition``, ``headers``, ``on_delivery``), waiting
    while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(DRAIN_S)  # the local queue is full: let deliveries drain
