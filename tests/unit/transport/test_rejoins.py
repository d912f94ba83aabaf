"""The rejoin budget the aggregate worker, the event handler and the sink share."""

from __future__ import annotations

import pytest

from streamfold.transport import rejoins
from streamfold.transport.rejoins import Rejoins


def test_a_rejoin_budget_refuses_the_one_too_many_and_forgets_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(rejoins.time, "monotonic", lambda: now[0])
    budget = Rejoins(limit=2, window_s=60.0)
    assert budget.spend() is None
    now[0] += 10
    assert budget.spend() is None
    assert budget.spend() == "3 times in 60 s"
    assert len(budget.times) == 2  # a refused rejoin is not counted
    now[0] += 55  # the first is out of the window now
    assert budget.spend() is None
    assert budget.spend() == "3 times in 60 s"
