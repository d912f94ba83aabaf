"""Rebalance callbacks that fail safely: an exception is kept and raised after the poll.

An exception raised inside a librdkafka rebalance callback would cross its C frames
mangled, so :meth:`CallbackGuard.guard` wraps each callback: a failure is logged and kept,
and :meth:`CallbackGuard.raise_pending` raises it once the poll has returned.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from streamfold.observability.logging import get_logger

__all__ = ["CallbackGuard"]

log = get_logger(__name__)

Callback = Callable[[Consumer, list[TopicPartition]], None]


class CallbackGuard:
    """Keeps the first failure of the rebalance callbacks it wraps."""

    def __init__(self) -> None:
        self._error: Exception | None = None

    def guard(self, callback: Callback) -> Callback:
        def guarded(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            try:
                callback(consumer, partitions)
            except Exception as exc:  # raised by raise_pending after the poll
                log.exception("rebalance callback failed", callback=callback.__name__)
                self._error = self._error or exc

        return guarded

    def raise_pending(self) -> None:
        """Raise the kept failure, if a callback failed."""
        error, self._error = self._error, None
        if error is not None:
            raise error
