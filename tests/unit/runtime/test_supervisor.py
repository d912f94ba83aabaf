"""A loop fenced while it stops, and one fenced while it runs."""

from __future__ import annotations

import pytest

from streamfold.runtime.checkpoint import FencedError
from streamfold.runtime.supervisor import RejoiningLoop

pytestmark = pytest.mark.unit


class _Fenced(RejoiningLoop):
    """Steps until its ``fence_at``-th step, which is fenced (after a stop, if asked)."""

    def __init__(self, fence_at: int, stop_first: bool) -> None:
        self.fence_at, self.stop_first = fence_at, stop_first
        self.steps = 0
        self.closes: list[bool] = []
        self.recovered: list[FencedError] = []

    def start(self) -> None:
        self._started = True

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.fence_at:
            if self.stop_first:
                self.stop()  # a SIGTERM arrives while a transactional call hangs
            raise FencedError("sending offsets: no answer in 45 s")
        if self.steps > self.fence_at + 2:
            self.stop()

    def close(self, *, commit: bool = True) -> None:
        self._started = False
        self.closes.append(commit)

    def _recover_from(self, fence: FencedError) -> None:
        self.recovered.append(fence)


def test_a_fence_that_ends_a_stop_ends_it_without_an_error() -> None:
    loop = _Fenced(fence_at=2, stop_first=True)
    loop.run()  # no exception: the process exits 0
    assert loop.closes == [False]  # nothing committed on the way out
    assert loop.recovered == []


def test_a_fence_while_running_rejoins() -> None:
    loop = _Fenced(fence_at=2, stop_first=False)
    loop.run()
    assert len(loop.recovered) == 1
    assert loop.closes == [False, True]  # the fenced run aborted, the stopped one committed
