"""Given / When / Expect for sagas, with a fake clock for their timers: no infrastructure.

::

    given(purchase, PurchasePlaced(...)).when(InvoiceChanged(..., status="payment_failed"))
        .expect_commands(ClosePurchase(purchase_id="p-1", reason="payment_failed"))
        .expect_ended()

    given(replenishment, StockBelowReorderPoint(...)).when_time_passes(timedelta(hours=2))
        .expect_commands(ReorderPurchaseOrder(po_id="s1/apple/r-1"))
        .expect_timer("delivery_due", after=timedelta(hours=2))

``given`` runs its inputs (events (an event that ``correlate`` s to another instance is
ignored, as the worker would route it elsewhere), :class:`~streamfold.domain.saga.CommandOutcome` s,
:class:`~streamfold.domain.saga.TimerFired` s, or one state to start from) through
:meth:`~streamfold.domain.saga.Saga.handle`, the code path a worker runs, each at the fake
clock's time (``at``, by default 2026-01-01 UTC). ``when`` handles one more input;
``when_time_passes`` moves the clock and fires every timer that comes due meanwhile, in due
order, each at its due time. Expectations chain and say what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from streamfold.domain.messages import Command, Event, State
from streamfold.domain.saga import (
    CommandOutcome,
    OutcomeKind,
    Saga,
    SagaInput,
    SagaMetadata,
    TimerFired,
    is_cancelled,
)
from streamfold.testing.diff import diff

__all__ = ["SagaGiven", "SagaResult", "given_saga"]

S = TypeVar("S", bound=State)

#: Firings in one when_time_passes before the kit calls it a loop.
_MAX_FIRINGS = 10_000
#: The fake clock's default start.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def given_saga(
    saga: Saga[S],
    *history: SagaInput | State | Iterable[SagaInput],
    saga_id: str | None = None,
    at: datetime = EPOCH,
    tenant: str | None = None,
) -> SagaGiven[S]:
    """An instance after ``history`` (or at one state); its id is ``saga_id``, else the
    first event's correlation (of ``history``, or of the first ``when``), else
    ``"saga-1"``."""
    __tracebackhide__ = True
    inputs: list[SagaInput] = []
    start: S | None = None
    for item in history:
        if isinstance(item, State):
            if not isinstance(item, saga.state_type) or start is not None or inputs:
                raise TypeError(f"given() takes one {saga.state_type.__name__} or inputs")
            start = item
        elif isinstance(item, Event | CommandOutcome | TimerFired):
            inputs.append(item)
        elif isinstance(item, list | tuple):
            inputs.extend(item)
        else:
            raise TypeError(
                f"given() takes events, outcomes (outcome_of(command)), timers or one state, "
                f"not {type(item).__name__}"
            )
    if saga_id is None:
        first = next((i for i in inputs if isinstance(i, Event)), None)
        saga_id = saga.correlate(first) if first is not None else None
    scenario = SagaGiven(saga, saga_id, start, at, tenant)
    for item in inputs:
        scenario = scenario.when(item).then()
    return scenario


class SagaGiven(Generic[S]):
    """A saga instance at a known state, timers and time, waiting for an input."""

    def __init__(
        self,
        saga: Saga[S],
        saga_id: str | None,
        state: S | None,
        now: datetime,
        tenant: str | None = None,
        timers: dict[str, datetime] | None = None,
        inputs: int = 0,
    ) -> None:
        self.saga = saga
        self.saga_id = saga_id
        self.state = state
        self.now = now
        self.tenant = tenant
        self.timers = dict(timers or {})
        self._inputs = inputs

    def when(self, item: SagaInput, metadata: SagaMetadata | None = None) -> SagaResult[S]:
        """Handle one input now (a timer fires as if it were due)."""
        if self.saga_id is None:
            self.saga_id = self.saga.correlate(item) if isinstance(item, Event) else "saga-1"
        self._inputs += 1
        meta = metadata or SagaMetadata(
            saga_id=self.saga_id,
            input_id=f"test/{self._inputs}",
            occurred_at=item.due if isinstance(item, TimerFired) else self.now,
            tenant=self.tenant,
        )
        timers = dict(self.timers)
        if isinstance(item, Event) and self.saga.correlate(item) != self.saga_id:
            # Another instance's event: the worker routes it there, never here.
            return SagaResult(self, self.state, timers, (), False, True, meta.occurred_at)
        if isinstance(item, TimerFired):
            timers.pop(item.name, None)
        decided = self.saga.handle(self.state, item, meta)
        if decided is None:
            return SagaResult(self, self.state, timers, (), False, True, meta.occurred_at)
        for name, due in decided.timers.items():
            if is_cancelled(due):
                timers.pop(name, None)
            else:
                timers[name] = due
        if decided.ended:
            timers.clear()
        commands = tuple(command for _id, command in decided.commands)
        return SagaResult(
            self, decided.state, timers, commands, decided.ended, False, meta.occurred_at
        )

    def when_time_passes(self, delta: timedelta) -> SagaResult[S]:
        """Move the clock by ``delta``, firing each timer due by then at its due time."""
        until = self.now + delta
        current: SagaGiven[S] = self
        commands: list[Command] = []
        fired_at: datetime | None = None
        ended = False
        fired = 0
        while current.timers and not ended:
            name, due = min(current.timers.items(), key=lambda pair: pair[1])
            if due > until:
                break
            fired += 1
            if fired > _MAX_FIRINGS:
                raise AssertionError(
                    f"timer {name!r} fired {_MAX_FIRINGS} times without the clock moving on: "
                    "does its handler set it again for no later than now?"
                )
            current = current._at(due)
            result = current.when(TimerFired(name, due))
            commands.extend(result.commands)
            fired_at, ended = due, result.ended
            current = result.then()
        state = None if ended else current.state
        return SagaResult(
            current._at(until),
            state,
            current.timers,
            tuple(commands),
            ended,
            ignored=fired_at is None,
            input_time=fired_at or until,
        )

    def _at(self, now: datetime) -> SagaGiven[S]:
        return SagaGiven(
            self.saga, self.saga_id, self.state, now, self.tenant, self.timers, self._inputs
        )


@dataclass(slots=True)
class SagaResult(Generic[S]):
    """What an input did; assert on it with the ``expect_*`` methods."""

    given: SagaGiven[S]
    state: S | None
    timers: dict[str, datetime]
    commands: tuple[Command, ...]
    ended: bool
    ignored: bool
    #: The time of the input (of the last timer fired): a timer's delay counts from here.
    input_time: datetime

    def then(self) -> SagaGiven[S]:
        """The instance after this input, for the next ``when``."""
        g = self.given
        state = None if self.ended else self.state
        return SagaGiven(g.saga, g.saga_id, state, g.now, g.tenant, self.timers, g._inputs)

    def expect_commands(self, *expected: Command) -> SagaResult[S]:
        """Expect exactly these commands sent, in order (none: nothing sent)."""
        __tracebackhide__ = True
        if len(self.commands) != len(expected):
            raise AssertionError(
                f"expected {len(expected)} command(s), got {len(self.commands)}: "
                f"{[type(c).__name__ for c in self.commands]}"
            )
        for index, (want, got) in enumerate(zip(expected, self.commands, strict=True)):
            differences = diff(want, got)
            if differences:
                raise AssertionError(
                    f"command {index} ({type(want).__name__}): " + "; ".join(differences)
                )
        return self

    def expect_state(self, expected: S | None) -> SagaResult[S]:
        __tracebackhide__ = True
        differences = diff(expected, self.state)
        if differences:
            raise AssertionError("state: " + "; ".join(differences))
        return self

    def expect_timer(
        self, name: str, *, at: datetime | None = None, after: timedelta | None = None
    ) -> SagaResult[S]:
        """Expect the timer ``name`` set, due ``at`` an instant or ``after`` a delay from
        the input's time (or set at all, with neither)."""
        __tracebackhide__ = True
        due = self.timers.get(name)
        if due is None:
            raise AssertionError(f"expected timer {name!r}; set: {sorted(self.timers)}")
        want = at if at is not None else (self.input_time + after if after is not None else due)
        if due != want:
            raise AssertionError(f"timer {name!r}: expected due {want}, got {due}")
        return self

    def expect_no_timer(self, name: str) -> SagaResult[S]:
        __tracebackhide__ = True
        if name in self.timers:
            raise AssertionError(f"expected no timer {name!r}; it is due {self.timers[name]}")
        return self

    def expect_ended(self, ended: bool = True) -> SagaResult[S]:
        __tracebackhide__ = True
        if self.ended != ended:
            raise AssertionError(f"expected the saga {'to end' if ended else 'to go on'}")
        return self

    def expect_ignored(self) -> SagaResult[S]:
        """Expect the input not handled (no handler, or no instance and not a start)."""
        __tracebackhide__ = True
        if not self.ignored:
            raise AssertionError(f"expected the input ignored; it sent {len(self.commands)}")
        return self


def outcome_of(
    command: Command, outcome: str = "accepted", code: str | None = None, **more: Any
) -> CommandOutcome:
    """The outcome of a command a saga sent, as the worker would deliver it."""
    return CommandOutcome(
        command_id=more.pop("command_id", "test"),
        command_type=type(command).__name__,
        aggregate_id=more.pop("aggregate_id", None),
        outcome=OutcomeKind(outcome),
        code=code,
        **more,
    )
