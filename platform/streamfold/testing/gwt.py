"""Given / When / Expect for aggregates: pure Python, no infrastructure.

::

    given(stock, SupplyReceived(...)).when(RecordSale(...)).expect_events(SaleRecorded(...))
    given(stock, StoreStock(...), version=3).when(RecordSale(...)).expect_rejected("no_stock")

``given`` folds its history with the aggregate's own evolve functions and ``when`` runs
:meth:`Aggregate.handle` — the very code path a worker runs. Expectations raise
``AssertionError`` with a message that says what differs: the number of events first, then the
event index and the field path (``event 1 (SaleRecorded): amount: expected 6.00, got 4.00``).
Each ``expect_*`` returns the :class:`AggregateResult`, so expectations chain.

The subject is the first argument: given a saga, ``given`` starts a saga scenario
(``given(saga, *events).when(event).expect_commands(...)``, see
:mod:`streamfold.testing.sagas`) with the same reporting.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar, overload

from streamfold.domain.aggregate import CANCELLED, Aggregate, Decision, Snapshot
from streamfold.domain.messages import Command, Event, Metadata, State
from streamfold.domain.saga import Saga, TimerFired
from streamfold.errors import Rejected
from streamfold.testing.diff import diff
from streamfold.testing.sagas import SagaGiven, given_saga

__all__ = ["AggregateResult", "Given", "given"]

S = TypeVar("S", bound=State)


@overload
def given(
    aggregate: Aggregate[S],
    *history: Event | State | Iterable[Event],
    version: int | None = None,
    deleted: bool = False,
) -> Given[S]: ...


@overload
def given(aggregate: Saga[S], *history: Any, **options: Any) -> SagaGiven[S]: ...


def given(
    aggregate: Aggregate[S] | Saga[S],
    *history: Any,
    version: int | None = None,
    deleted: bool = False,
    **options: Any,
) -> Given[S] | SagaGiven[S]:
    """Start a scenario from events (folded in order) or from one state.

    With a state, ``version`` defaults to 1; with events, it is the number of events.
    With nothing, the aggregate does not exist yet. Given a saga, the options are those of
    :func:`streamfold.testing.sagas.given_saga`.
    """
    __tracebackhide__ = True
    if isinstance(aggregate, Saga):
        return given_saga(aggregate, *history, **options)
    events: list[Event] = []
    states: list[State] = []
    for item in history:
        if isinstance(item, State):
            states.append(item)
        elif isinstance(item, Event):
            events.append(item)
        else:
            events.extend(item)
    if states and (events or len(states) > 1):
        raise TypeError("given() takes either events or a single state, not both")
    if states:
        state = states[0]
        if not isinstance(state, aggregate.state_type):
            raise TypeError(f"{aggregate!r} has state {aggregate.state_type.__name__}")
        start: Snapshot[S] = Snapshot(state, 1 if version is None else version, deleted)
    else:
        start = aggregate.fold(events)
        if version is not None or deleted:
            start = Snapshot(start.state, start.version if version is None else version, deleted)
    return Given(aggregate, start)


class Given(Generic[S]):
    """An aggregate at a known snapshot, waiting for a command."""

    def __init__(self, aggregate: Aggregate[S], snapshot: Snapshot[S]) -> None:
        self.aggregate = aggregate
        self.snapshot = snapshot

    def when_timer(
        self, name: str, due: datetime, metadata: Metadata | None = None
    ) -> AggregateResult[S]:
        """Fire the aggregate's timer ``name`` due at ``due``, as a worker would then."""
        snap = self.snapshot
        meta = metadata or Metadata(issued_at=due)
        try:
            decision = self.aggregate.handle_timer(
                snap.state,
                snap.version,
                TimerFired(name, due),
                meta,
                aggregate_id="given",
                deleted=snap.deleted,
            )
        except Rejected as rejected:
            return AggregateResult(TimerFired(name, due), None, rejected)
        if decision is None:
            empty: Decision[S] = Decision("given", (), snap.state, snap.version, snap.deleted)
            return AggregateResult(TimerFired(name, due), empty, None)
        return AggregateResult(TimerFired(name, due), decision, None)

    def when(self, command: Command, metadata: Metadata | None = None) -> AggregateResult[S]:
        """Handle ``command`` as a worker would; a rejection is captured, not raised."""
        snap = self.snapshot
        try:
            decision = self.aggregate.handle(
                snap.state, snap.version, command, metadata, deleted=snap.deleted
            )
        except Rejected as rejected:
            return AggregateResult(command, None, rejected)
        return AggregateResult(command, decision, None)


class AggregateResult(Generic[S]):
    """What happened to the command; assert on it with the ``expect_*`` methods."""

    def __init__(
        self,
        command: Command | TimerFired,
        decision: Decision[S] | None,
        rejection: Rejected | None,
    ) -> None:
        self.command = command
        self.decision = decision
        self.rejection = rejection

    def _accepted(self, expectation: str) -> Decision[S]:
        __tracebackhide__ = True
        if self.decision is None:
            assert self.rejection is not None
            raise AssertionError(
                f"expected {expectation}, but {type(self.command).__name__} was rejected: "
                f"{self.rejection.code}: {self.rejection.message}"
            )
        return self.decision

    @property
    def events(self) -> tuple[Event, ...]:
        """The decided events (fails if the command was rejected)."""
        return self._accepted("events").events

    @property
    def state(self) -> S | None:
        """The state after the command (fails if the command was rejected)."""
        return self._accepted("a state").state

    def expect_events(self, *expected: Event) -> AggregateResult[S]:
        """Expect exactly these events, in order (none: the command changes nothing)."""
        __tracebackhide__ = True
        actual = self._accepted(f"{len(expected)} event(s)").events
        if len(actual) != len(expected):
            raise AssertionError(
                f"expected {len(expected)} event(s), got {len(actual)}: "
                f"{[type(e).__name__ for e in actual]}"
            )
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            differences = diff(want, got)
            if differences:
                raise AssertionError(
                    f"event {index} ({type(want).__name__}): " + "; ".join(differences)
                )
        return self

    def expect_state(self, expected: S | None) -> AggregateResult[S]:
        """Expect the state after the command to equal ``expected``."""
        __tracebackhide__ = True
        differences = diff(expected, self._accepted("a state").state)
        if differences:
            raise AssertionError("state: " + "; ".join(differences))
        return self

    def expect_version(self, version: int) -> AggregateResult[S]:
        """Expect the aggregate's version after the command."""
        __tracebackhide__ = True
        actual = self._accepted(f"version {version}").version
        if actual != version:
            raise AssertionError(f"expected version {version}, got {actual}")
        return self

    def expect_timer(
        self, name: str, *, at: datetime | None = None, cancelled: bool = False
    ) -> AggregateResult[S]:
        """Expect the decision to set the aggregate's timer ``name`` (due ``at``, if given)
        or, with ``cancelled``, to cancel it."""
        __tracebackhide__ = True
        timers = self._accepted(f"timer {name!r}").timers
        if name not in timers:
            raise AssertionError(f"expected timer {name!r}; set: {sorted(timers)}")
        if cancelled != (timers[name] == CANCELLED):
            raise AssertionError(f"expected timer {name!r} {'cancelled' if cancelled else 'set'}")
        if at is not None and timers[name] != at:
            raise AssertionError(f"timer {name!r}: expected due {at}, got {timers[name]}")
        return self

    def expect_deleted(self, deleted: bool = True) -> AggregateResult[S]:
        """Expect the aggregate to be (or not be) soft-deleted after the command."""
        __tracebackhide__ = True
        if self._accepted("a deleted flag").deleted != deleted:
            raise AssertionError(f"expected deleted={deleted}")
        return self

    def expect_rejected(self, code: str, message: str | None = None) -> AggregateResult[S]:
        """Expect a rejection with ``code`` (and, if given, ``message`` within its message)."""
        __tracebackhide__ = True
        if self.rejection is None:
            events = [type(e).__name__ for e in self.events]
            raise AssertionError(f"expected rejection {code!r}, but it was accepted: {events}")
        if self.rejection.code != code:
            raise AssertionError(
                f"expected rejection {code!r}, got {self.rejection.code!r}: "
                f"{self.rejection.message}"
            )
        if message is not None and message not in self.rejection.message:
            raise AssertionError(
                f"rejection message {self.rejection.message!r} does not contain {message!r}"
            )
        return self
