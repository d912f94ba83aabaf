"""How often a Kafka client may rejoin its group in process before it gives up."""

from __future__ import annotations

import time

__all__ = ["Rejoins"]


class Rejoins:
    """A runner's budget of rejoins in process (after a fence, or its group moving on
    without it): at most ``limit`` within ``window_s``; one more means something keeps
    taking its place, and it stops instead."""

    def __init__(self, limit: int = 5, window_s: float = 600.0) -> None:
        self.limit = limit
        self.window_s = window_s
        #: When each rejoin within the window happened (time.monotonic()).
        self.times: list[float] = []

    def spend(self) -> str | None:
        """Count a rejoin; over the budget, count nothing and say how often it happened."""
        now = time.monotonic()
        self.times = [t for t in self.times if now - t < self.window_s]
        if len(self.times) >= self.limit:
            return f"{len(self.times) + 1} times in {self.window_s:.0f} s"
        self.times.append(now)
        return None
