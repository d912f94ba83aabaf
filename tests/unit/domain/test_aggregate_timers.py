"""An aggregate's own timers: set by a decide (WithTimers), decided by on_timer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamfold.domain import BoundedContext, Command, Event, Metadata, Rejected, State
from streamfold.domain.aggregate import CANCELLED, HandlerContractError, WithTimers
from streamfold.domain.saga import TimerFired
from streamfold.errors import ConfigurationError
from streamfold.state.entry import AggregateEntry, StoredResult
from streamfold.testing import given

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
shop = BoundedContext("shop", namespace="io.streamfold.test.shop")


class Reserve(Command):
    seat_id: str
    minutes: int = 15


class Confirm(Command):
    seat_id: str


class Reserved(Event):
    seat_id: str


class Confirmed(Event):
    seat_id: str


class Expired(Event):
    seat_id: str


class Seat(State):
    seat_id: str
    status: str


seats = shop.aggregate("seat", state=Seat, id="seat_id")


@seats.decides(Reserve, creates=True)
def reserve(state: Seat | None, cmd: Reserve) -> WithTimers:
    if state is not None and state.status != "free":
        raise Rejected("taken", f"seat {cmd.seat_id} is {state.status}")
    hold = timedelta(minutes=cmd.minutes)
    return WithTimers(Reserved(seat_id=cmd.seat_id), timers={"expire": hold})


@seats.decides(Confirm)
def confirm(state: Seat, cmd: Confirm) -> WithTimers:
    return WithTimers([Confirmed(seat_id=cmd.seat_id)], cancel=["expire"])


@seats.on_timer("expire")
def expire(state: Seat, timer: TimerFired) -> list[Event]:
    return [Expired(seat_id=state.seat_id)] if state.status == "reserved" else []


@seats.evolves(Reserved)
def reserved(state: Seat | None, event: Reserved) -> Seat:
    return Seat(seat_id=event.seat_id, status="reserved")


@seats.evolves(Confirmed)
def confirmed(state: Seat, event: Confirmed) -> Seat:
    return state.model_copy(update={"status": "sold"})


@seats.evolves(Expired)
def expired(state: Seat, event: Expired) -> Seat:
    return state.model_copy(update={"status": "free"})


def test_a_decide_sets_a_timer_counted_from_the_commands_time() -> None:
    outcome = given(seats).when(Reserve(seat_id="a1"), Metadata(issued_at=AT))
    outcome.expect_events(Reserved(seat_id="a1"))
    outcome.expect_timer("expire", at=AT + timedelta(minutes=15))
    assert outcome.decision is not None and outcome.decision.timers["expire"].tzinfo is UTC


def test_a_decide_cancels_a_timer() -> None:
    given(seats, Reserved(seat_id="a1")).when(Confirm(seat_id="a1")).expect_timer(
        "expire", cancelled=True
    )


def test_the_timer_decides_on_the_aggregate_as_it_is_when_due() -> None:
    given(seats, Reserved(seat_id="a1")).when_timer("expire", AT).expect_events(
        Expired(seat_id="a1")
    ).expect_state(Seat(seat_id="a1", status="free")).expect_version(2)
    given(seats, Reserved(seat_id="a1"), Confirmed(seat_id="a1")).when_timer(
        "expire", AT
    ).expect_events()


def test_a_timer_of_an_aggregate_that_does_not_exist_decides_nothing() -> None:
    given(seats).when_timer("expire", AT).expect_events().expect_version(0)
    fired = TimerFired("expire", AT)
    assert seats.handle_timer(None, 0, fired, Metadata(), aggregate_id="x") is None


def test_timer_contract_errors() -> None:
    with pytest.raises(HandlerContractError, match="no decide for timer 'nope'"):
        seat = Seat(seat_id="a", status="free")
        seats.handle_timer(seat, 1, TimerFired("nope", AT), Metadata(), aggregate_id="a")
    with pytest.raises(ConfigurationError, match="already has a decide"):
        seats.on_timer("expire")(lambda state, timer: [])


def test_a_timer_without_a_decide_or_a_naive_instant_is_a_contract_error() -> None:
    lone = BoundedContext("lone", namespace="io.streamfold.test.lone")

    class Ping(Command):
        pid: str

    class Pinged(Event):
        pid: str

    class P(State):
        pid: str

    pings = lone.aggregate("ping", state=P, id="pid")

    @pings.decides(Ping, creates=True)
    def ping(state: P | None, cmd: Ping) -> WithTimers:
        when = datetime(2026, 1, 1) if cmd.pid == "naive" else timedelta(seconds=1)
        return WithTimers([Pinged(pid=cmd.pid)], timers={"t": when})

    @pings.evolves(Pinged, creates=True)
    def pinged(state: P | None, event: Pinged) -> P:
        return P(pid=event.pid)

    with pytest.raises(HandlerContractError, match="no decide for"):
        pings.handle(None, 0, Ping(pid="x"))

    @pings.on_timer("t")
    def t(state: P, timer: TimerFired) -> list[Event]:
        return []

    with pytest.raises(HandlerContractError, match="aware datetime"):
        pings.handle(None, 0, Ping(pid="naive"))
    assert pings.handle(None, 0, Ping(pid="x"), Metadata(issued_at=AT)).timers == {
        "t": AT + timedelta(seconds=1)
    }
    assert CANCELLED.tzinfo is UTC


def test_the_entry_keeps_timers_and_reads_entries_written_before_them() -> None:
    result = StoredResult("accepted", 1, ("Reserved",))
    entry = AggregateEntry().after(
        version=1,
        deleted=False,
        state=b"s",
        command_id="c",
        result=result,
        window=4,
        timers={"expire": 123},
    )
    assert AggregateEntry.decode(entry.encode()).timers == {"expire": 123}
    plain = AggregateEntry().after(
        version=1, deleted=False, state=b"s", command_id="c", result=result, window=4
    )
    assert len(plain.encode()) < len(entry.encode())
    assert AggregateEntry.decode(plain.encode()).timers == {}
    kept = entry.after(
        version=2, deleted=False, state=b"t", command_id="d", result=result, window=4
    )
    assert kept.timers == {"expire": 123}  # unchanged when not given
