"""A read_committed watcher of a results topic: when each command's result became visible."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

from confluent_kafka import Consumer

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.transport.settings import KafkaSettings


class ResultWatcher:
    """Follows ``topic`` in a thread of its own until :meth:`stop`."""

    def __init__(self, settings: KafkaSettings, topic: str, codec: AvroCodec) -> None:
        #: command id -> (partition, monotonic time its first result was seen)
        self.seen: dict[str, tuple[int, float]] = {}
        #: the monotonic time of every result seen, in order
        self.times: list[float] = []
        self._reader = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
        self._stop = threading.Event()
        self._consumer = Consumer(
            settings.consumer_config(f"watch-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 10})
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, 0.05):
                if message.error() is None:
                    now = time.monotonic()
                    _, record = self._reader.decode_dict(message.value() or b"")
                    self.seen.setdefault(record["command_id"], (message.partition() or 0, now))
                    self.times.append(now)

    def stall_after(self, at: float, window: float = 60.0) -> float:
        """The longest gap between results in ``[at, at + window]``, counted from ``at``."""
        return longest_gap(self.times, at, window)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def longest_gap(times: list[float], at: float, window: float = 60.0) -> float:
    """The longest gap between the moments ``times`` (monotonic, in order) in ``[at, at +
    window]``, counted from ``at``: ``window`` when none falls in it."""
    inside = [at] + [t for t in times if at < t <= at + window]
    if len(inside) == 1:
        return window
    return max(b - a for a, b in itertools.pairwise(inside))
