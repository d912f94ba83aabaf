"""The saga Given / When / Expect kit: what it checks, how its failures read, the fake clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from streamfold.domain import BoundedContext, Command, Event, State
from streamfold.domain.saga import CommandOutcome, SagaMetadata, SagaStep, TimerFired
from streamfold.testing import SagaGiven, given, outcome_of
from streamfold.testing.sagas import EPOCH

pytestmark = pytest.mark.unit


class Placed(Event):
    order: str


class Paid(Event):
    order: str


class Shipped(Event):
    order: str


class Noise(Event):
    order: str


class Remind(Command):
    order: str
    n: int
    at: datetime


class Close(Command):
    order: str
    reason: str


class Checkout(State):
    order: str
    reminders: int = 0
    close_failed: str | None = None


class Unrelated(State):
    order: str


HOUR = timedelta(hours=1)

shop = BoundedContext("shop", namespace="io.test.shop")
checkout = shop.saga("checkout", state=Checkout, sends=[Remind, Close])


@checkout.on(Placed, correlate=lambda e: e.order, starts=True)
def placed(state: Checkout | None, event: Placed) -> SagaStep[Checkout]:
    # declared latest-first: the kit must fire by due time, not by insertion order
    return SagaStep(Checkout(order=event.order), timers={"expire": 2.5 * HOUR, "reminder": HOUR})


@checkout.on(Paid, correlate=lambda e: e.order)
def paid(state: Checkout, event: Paid) -> SagaStep[Checkout]:
    return SagaStep(state, send=[Close(order=state.order, reason="paid")], end=True)


@checkout.on(Shipped, correlate=lambda e: e.order)
def shipped(state: Checkout, event: Shipped) -> SagaStep[Checkout]:
    return SagaStep(state, cancel=["reminder"])


@checkout.on(Noise, correlate=lambda e: e.order)
def noise(state: Checkout, event: Noise) -> SagaStep[Checkout]:
    return SagaStep(
        state,
        send=[Close(order=state.order, reason="a"), Close(order=state.order, reason="b")],
    )


@checkout.on_outcome(Close)
def close_outcome(state: Checkout, outcome: CommandOutcome) -> SagaStep[Checkout]:
    return SagaStep(state.model_copy(update={"close_failed": outcome.code}))


@checkout.on_timer("reminder")
def reminder(state: Checkout, timer: TimerFired, meta: SagaMetadata) -> SagaStep[Checkout]:
    n = state.reminders + 1
    return SagaStep(
        state.model_copy(update={"reminders": n}),
        send=[Remind(order=state.order, n=n, at=meta.occurred_at)],
        timers={"reminder": HOUR},
    )


@checkout.on_timer("expire")
def expire(state: Checkout, timer: TimerFired) -> SagaStep[Checkout]:
    return SagaStep(None, send=[Close(order=state.order, reason="expired")], end=True)


def started() -> SagaGiven[Checkout]:
    return given(checkout, Placed(order="o-1"))


# --- given ----------------------------------------------------------------------------


def test_the_saga_id_is_the_first_events_correlation() -> None:
    scenario = given(checkout, outcome_of(Close(order="x", reason="y")), Placed(order="o-7"))
    assert scenario.saga_id == "o-7"
    assert scenario.state == Checkout(order="o-7")
    assert given(checkout).saga_id is None  # until the first when
    assert given(checkout).when(Placed(order="o-8")).given.saga_id == "o-8"
    assert given(checkout).when(outcome_of(Close(order="x", reason="y"))).given.saga_id == "saga-1"
    assert given(checkout, Placed(order="o-7"), saga_id="mine").saga_id == "mine"


def test_given_folds_its_inputs_and_sets_their_timers_at_the_fake_clock() -> None:
    scenario = started()
    assert scenario.now == EPOCH
    assert scenario.timers == {"expire": EPOCH + 2.5 * HOUR, "reminder": EPOCH + HOUR}
    at = datetime(2031, 3, 3, tzinfo=UTC)
    assert given(checkout, Placed(order="o-1"), at=at).timers["reminder"] == at + HOUR


def test_given_a_state() -> None:
    given(checkout, Checkout(order="o-1", reminders=3)).when(Paid(order="o-1")).expect_commands(
        Close(order="o-1", reason="paid")
    ).expect_ended()
    state = Checkout(order="o-1", reminders=3)
    assert given(checkout, state).state == state


def test_given_refuses_a_state_of_another_type_or_with_inputs() -> None:
    with pytest.raises(TypeError, match="takes one Checkout or inputs"):
        given(checkout, Unrelated(order="o-1"))
    with pytest.raises(TypeError, match="takes one Checkout or inputs"):
        given(checkout, Placed(order="o-1"), Checkout(order="o-1"))
    with pytest.raises(TypeError, match="takes one Checkout or inputs"):
        given(checkout, Checkout(order="o-1"), Checkout(order="o-1"))


def test_given_refuses_a_command_as_history() -> None:
    with pytest.raises(TypeError):
        given(checkout, Placed(order="o-1"), Close(order="o-1", reason="paid"))


def test_given_an_event_that_cannot_start_leaves_no_instance() -> None:
    assert given(checkout, Paid(order="o-1")).state is None


# --- expect_commands --------------------------------------------------------------------


def test_expect_commands_passes_on_the_same_commands_in_order() -> None:
    started().when(Noise(order="o-1")).expect_commands(
        Close(order="o-1", reason="a"), Close(order="o-1", reason="b")
    )
    started().when(Shipped(order="o-1")).expect_commands()


def test_expect_commands_reports_a_different_count() -> None:
    result = started().when(Noise(order="o-1"))
    with pytest.raises(
        AssertionError, match=re.escape("expected 1 command(s), got 2: ['Close', 'Close']")
    ):
        result.expect_commands(Close(order="o-1", reason="a"))
    with pytest.raises(AssertionError, match=re.escape("expected 0 command(s), got 2")):
        result.expect_commands()


def test_expect_commands_reports_the_differing_field() -> None:
    result = started().when(Noise(order="o-1"))
    with pytest.raises(
        AssertionError, match=re.escape("command 1 (Close): reason: expected 'c', got 'b'")
    ):
        result.expect_commands(Close(order="o-1", reason="a"), Close(order="o-1", reason="c"))


def test_expect_commands_reports_a_different_type() -> None:
    result = started().when(Paid(order="o-1"))
    with pytest.raises(AssertionError, match="command 0 \\(Remind\\): expected Remind, got Close"):
        result.expect_commands(Remind(order="o-1", n=1, at=EPOCH))


# --- expect_state -----------------------------------------------------------------------


def test_expect_state_passes_and_reports_the_differing_field() -> None:
    result = started().when_time_passes(HOUR)
    result.expect_state(Checkout(order="o-1", reminders=1))
    with pytest.raises(AssertionError, match=re.escape("state: reminders: expected 5, got 1")):
        result.expect_state(Checkout(order="o-1", reminders=5))


def test_expect_state_none_after_the_end() -> None:
    result = started().when(Paid(order="o-1"))
    result.expect_state(None)
    with pytest.raises(AssertionError, match="state: expected Checkout"):
        result.expect_state(Checkout(order="o-1"))


# --- expect_timer / expect_no_timer -----------------------------------------------------


def test_expect_timer_at_an_instant_after_a_delay_or_set_at_all() -> None:
    result = given(checkout).when(Placed(order="o-1"))
    result.expect_timer("reminder").expect_timer("reminder", at=EPOCH + HOUR)
    result.expect_timer("expire", after=2.5 * HOUR)


def test_expect_timer_reports_a_missing_timer_with_those_set() -> None:
    result = given(checkout).when(Placed(order="o-1"))
    with pytest.raises(
        AssertionError, match=re.escape("expected timer 'nope'; set: ['expire', 'reminder']")
    ):
        result.expect_timer("nope")


def test_expect_timer_reports_a_different_due_time() -> None:
    result = given(checkout).when(Placed(order="o-1"))
    with pytest.raises(
        AssertionError,
        match=re.escape(f"timer 'reminder': expected due {EPOCH + 2 * HOUR}, got {EPOCH + HOUR}"),
    ):
        result.expect_timer("reminder", after=2 * HOUR)
    with pytest.raises(AssertionError, match="timer 'expire': expected due"):
        result.expect_timer("expire", at=EPOCH)


def test_expect_no_timer_passes_after_a_cancel_and_reports_a_set_one() -> None:
    result = started().when(Shipped(order="o-1"))
    result.expect_no_timer("reminder").expect_timer("expire", at=EPOCH + 2.5 * HOUR)
    with pytest.raises(
        AssertionError,
        match=re.escape(f"expected no timer 'expire'; it is due {EPOCH + 2.5 * HOUR}"),
    ):
        result.expect_no_timer("expire")


def test_ending_clears_the_timers() -> None:
    result = started().when(Paid(order="o-1"))
    result.expect_no_timer("reminder").expect_no_timer("expire")
    assert result.timers == {}


# --- expect_ended / expect_ignored ------------------------------------------------------


def test_expect_ended_both_ways() -> None:
    ended = started().when(Paid(order="o-1"))
    ended.expect_ended()
    with pytest.raises(AssertionError, match="expected the saga to go on"):
        ended.expect_ended(False)
    going = started().when(Shipped(order="o-1"))
    going.expect_ended(False)
    with pytest.raises(AssertionError, match="expected the saga to end"):
        going.expect_ended()


def test_expect_ignored_passes_for_inputs_the_saga_does_not_handle() -> None:
    given(checkout).when(Paid(order="o-1")).expect_ignored().expect_commands()
    started().when(TimerFired("unknown", EPOCH)).expect_ignored()
    started().when(outcome_of(Remind(order="o-1", n=1, at=EPOCH), "rejected")).expect_ignored()


def test_expect_ignored_reports_a_handled_input() -> None:
    with pytest.raises(AssertionError, match="expected the input ignored; it sent 2"):
        started().when(Noise(order="o-1")).expect_ignored()
    with pytest.raises(AssertionError, match="expected the input ignored; it sent 0"):
        started().when(Shipped(order="o-1")).expect_ignored()


def test_an_outcome_reaches_its_handler() -> None:
    outcome = outcome_of(Close(order="o-1", reason="paid"), "rejected", "already_closed")
    assert outcome.command_type == "Close"
    started().when(outcome).expect_state(Checkout(order="o-1", close_failed="already_closed"))


# --- when_time_passes -------------------------------------------------------------------


def test_time_passing_before_any_timer_is_due_fires_nothing() -> None:
    result = started().when_time_passes(HOUR - timedelta(microseconds=1))
    result.expect_ignored().expect_commands().expect_ended(False)
    result.expect_state(Checkout(order="o-1"))
    result.expect_timer("reminder", at=EPOCH + HOUR)


def test_a_timer_fires_at_its_due_time_exactly_when_reached() -> None:
    result = started().when_time_passes(HOUR)
    result.expect_commands(Remind(order="o-1", n=1, at=EPOCH + HOUR))
    # a delay set by a timer handler counts from the timer's due time
    result.expect_timer("reminder", at=EPOCH + 2 * HOUR).expect_timer("reminder", after=HOUR)
    result.expect_timer("expire", at=EPOCH + 2.5 * HOUR)


def test_timers_fire_in_due_order_each_at_its_due_time_until_the_saga_ends() -> None:
    result = started().when_time_passes(10 * HOUR)
    result.expect_commands(
        Remind(order="o-1", n=1, at=EPOCH + HOUR),
        Remind(order="o-1", n=2, at=EPOCH + 2 * HOUR),
        Close(order="o-1", reason="expired"),
    )
    result.expect_ended().expect_state(None).expect_no_timer("reminder")
    assert result.timers == {}


def test_the_clock_moves_on_across_scenario_steps() -> None:
    halfway = started().when_time_passes(HOUR / 2).then()
    assert halfway.now == EPOCH + HOUR / 2
    halfway.when_time_passes(HOUR / 2).expect_commands(Remind(order="o-1", n=1, at=EPOCH + HOUR))
    later = halfway.when_time_passes(HOUR).then()
    assert later.now == EPOCH + 1.5 * HOUR
    # an event now counts its delays from the moved clock
    later.when(Placed(order="o-1")).expect_timer("reminder", at=EPOCH + 2.5 * HOUR)


def test_a_cancelled_timer_does_not_fire() -> None:
    result = started().when(Shipped(order="o-1")).then().when_time_passes(2 * HOUR)
    result.expect_ignored().expect_commands().expect_state(Checkout(order="o-1"))


def test_nothing_fires_after_the_saga_ended() -> None:
    result = started().when(Paid(order="o-1")).then().when_time_passes(10 * HOUR)
    result.expect_ignored().expect_commands().expect_state(None)
