"""Saga declaration (validated at registration) and execution (Saga.handle -> Decided)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from streamfold.domain import BoundedContext, Command, Event, State
from streamfold.domain.saga import (
    CommandOutcome,
    Decided,
    OutcomeKind,
    Saga,
    SagaMetadata,
    SagaStep,
    TimerFired,
    is_cancelled,
    saga_command_id,
)
from streamfold.errors import ConfigurationError, HandlerContractError

pytestmark = pytest.mark.unit


class Begin(Event):
    flow: str


class Poke(Event):
    flow: str


class Other(Event):
    flow: str


class Ship(Command):
    order: str


class Bill(Command):
    order: str


class Unsent(Command):
    order: str


class Flow(State):
    flow: str
    step: int = 0
    note: str = ""


class NotFlow(State):
    x: str = ""


T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)

PokeFn = Callable[[Flow, Poke, SagaMetadata], SagaStep[Flow]]


def make(poke: PokeFn | None = None) -> tuple[BoundedContext, Saga[Flow]]:
    """A fresh context with a saga: Begin starts it, Poke runs ``poke``, the outcome of Ship
    and the timer 'remind' are handled (Bill's outcome and other timers are not)."""
    ops = BoundedContext("ops", namespace="io.test.ops")
    flow = ops.saga("flow", state=Flow, sends=[Ship, Bill])

    @flow.on(Begin, correlate=lambda e: e.flow, starts=True)
    def begun(state: Flow | None, event: Begin) -> SagaStep[Flow]:
        return SagaStep(
            Flow(flow=event.flow, note="existing" if state is not None else "new"),
            send=[Ship(order=event.flow), Bill(order=event.flow)],
            timers={"remind": timedelta(hours=1)},
        )

    @flow.on(Poke, correlate=lambda e: e.flow)
    def poked(state: Flow, event: Poke, meta: SagaMetadata) -> SagaStep[Flow]:
        if poke is not None:
            return poke(state, event, meta)
        return SagaStep(state.model_copy(update={"step": state.step + 1, "note": meta.input_id}))

    @flow.on_outcome(Ship)
    def shipped(state: Flow, outcome: CommandOutcome) -> SagaStep[Flow]:
        return SagaStep(state.model_copy(update={"note": f"ship {outcome.outcome.value}"}))

    @flow.on_timer("remind")
    def remind(state: Flow, timer: TimerFired, meta: SagaMetadata) -> SagaStep[Flow]:
        return SagaStep(state.model_copy(update={"note": f"remind at {meta.occurred_at}"}))

    return ops, flow


def meta(saga_id: str = "f1", input_id: str = "in-1", at: datetime = T0) -> SagaMetadata:
    return SagaMetadata(saga_id=saga_id, input_id=input_id, occurred_at=at)


def poke_with(step: SagaStep[Flow] | Callable[[Flow], SagaStep[Flow]]) -> Saga[Flow]:
    """A saga whose Poke handler returns ``step`` (or ``step(state)``)."""
    _, flow = make(lambda state, _e, _m: step(state) if callable(step) else step)
    return flow


STARTED = Flow(flow="f1")


def handled(result: Decided[Any] | None) -> Decided[Any]:
    assert result is not None, "expected the input handled"
    return result


# --- declaration ----------------------------------------------------------------------


@pytest.mark.parametrize("state", [Ship, int, Flow(flow="x"), "Flow"])
def test_state_must_be_a_state_subclass(state: Any) -> None:
    ops = BoundedContext("ops", namespace="io.test.ops")
    with pytest.raises(ConfigurationError, match="state must be a State subclass"):
        ops.saga("flow", state=state, sends=[Ship])


@pytest.mark.parametrize("sends", [[], (), [Begin], [Ship, Flow], [Ship(order="x")]])
def test_sends_must_list_command_types(sends: Any) -> None:
    ops = BoundedContext("ops", namespace="io.test.ops")
    with pytest.raises(ConfigurationError, match="sends must list the Command types"):
        ops.saga("flow", state=Flow, sends=sends)


@pytest.mark.parametrize("event", [Ship, Flow, Begin(flow="x"), "Begin"])
def test_on_takes_an_event_type(event: Any) -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match="on\\(\\) takes an Event type"):
        flow.on(event, correlate=lambda e: "x")


def test_correlate_must_be_callable() -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match="correlate must be a function"):
        flow.on(Other, correlate="flow")  # type: ignore[arg-type]


def test_a_second_handler_for_the_same_input_is_refused() -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match="already handles Begin"):
        flow.on(Begin, correlate=lambda e: e.flow)(lambda s, e: SagaStep(s))
    with pytest.raises(ConfigurationError, match="already handles outcome of Ship"):
        flow.on_outcome(Ship)(lambda s, o: SagaStep(s))
    with pytest.raises(ConfigurationError, match="already handles timer 'remind'"):
        flow.on_timer("remind")(lambda s, t: SagaStep(s))


def _one(state: Any) -> SagaStep[Any]:
    return SagaStep(state)


def _four(state: Any, item: Any, meta: Any, extra: Any) -> SagaStep[Any]:
    return SagaStep(state)


def _keyword_input(state: Any, *, item: Any) -> SagaStep[Any]:
    return SagaStep(state)


@pytest.mark.parametrize(("fn", "count"), [(_one, 1), (_four, 4), (_keyword_input, 1)])
def test_handlers_take_two_or_three_positional_parameters(fn: Any, count: int) -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match=f"2 or 3 positional parameters.*got {count}"):
        flow.on(Other, correlate=lambda e: e.flow)(fn)
    with pytest.raises(ConfigurationError, match="2 or 3 positional parameters"):
        flow.on_timer("other")(fn)
    with pytest.raises(ConfigurationError, match="2 or 3 positional parameters"):
        flow.on_outcome(Bill)(fn)
    assert Other not in flow.events
    assert "other" not in flow.timer_names
    assert not flow.handles_outcome("Bill")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 101, "é", "a\x00b"])
def test_timer_names_are_checked(name: str) -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match="timer name"):
        flow.on_timer(name)


def test_timer_names_may_use_letters_digits_dot_dash_underscore_up_to_100() -> None:
    _, flow = make()
    for name in ("a.b-c_9", "x" * 100):
        flow.on_timer(name)(lambda s, t: SagaStep(s))
    assert flow.timer_names == ("remind", "a.b-c_9", "x" * 100)


def test_on_outcome_only_for_a_command_the_saga_sends() -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match="does not send Unsent"):
        flow.on_outcome(Unsent)


def test_on_outcome_with_a_non_type_is_a_configuration_error() -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError):
        flow.on_outcome("Ship")  # type: ignore[arg-type]


def _wrong_event(state: Flow, event: Poke) -> SagaStep[Flow]:
    return SagaStep(state)


def _timer_as_outcome(state: Flow, timer: CommandOutcome) -> SagaStep[Flow]:
    return SagaStep(state)


def _outcome_as_timer(state: Flow, outcome: TimerFired) -> SagaStep[Flow]:
    return SagaStep(state)


def _outcome_as_event(state: Flow, outcome: Begin) -> SagaStep[Flow]:
    return SagaStep(state)


def test_an_input_annotation_that_cannot_take_the_input_is_refused() -> None:
    _, flow = make()
    with pytest.raises(ConfigurationError, match="handles Other but its parameter 'event'"):
        flow.on(Other, correlate=lambda e: e.flow)(_wrong_event)
    with pytest.raises(ConfigurationError, match=r"handles TimerFired .* annotated CommandOutcome"):
        flow.on_timer("late")(_timer_as_outcome)
    with pytest.raises(ConfigurationError, match=r"handles CommandOutcome .* annotated TimerFired"):
        flow.on_outcome(Bill)(_outcome_as_timer)
    _, flow = make()
    with pytest.raises(ConfigurationError, match=r"handles CommandOutcome .* annotated Begin"):
        flow.on_outcome(Bill)(_outcome_as_event)


def _base_event(state: Flow, event: Event) -> SagaStep[Flow]:
    return SagaStep(state)


def _unannotated(state, event):  # type: ignore[no-untyped-def]
    return SagaStep(state)


def test_compatible_or_missing_annotations_are_accepted() -> None:
    _, flow = make()
    flow.on(Other, correlate=lambda e: e.flow)(_base_event)
    flow.on_timer("late")(_unannotated)
    assert Other in flow.events
    assert "late" in flow.timer_names


def test_saga_and_aggregate_names_clash_in_a_context() -> None:
    ops = BoundedContext("ops", namespace="io.test.ops")
    ops.aggregate("flow", state=NotFlow, id="order")
    with pytest.raises(ConfigurationError, match="already has an aggregate or a saga 'flow'"):
        ops.saga("flow", state=Flow, sends=[Ship])
    ops.saga("other", state=Flow, sends=[Ship])
    with pytest.raises(ConfigurationError, match="already has an aggregate or a saga 'other'"):
        ops.aggregate("other", state=NotFlow, id="order")
    with pytest.raises(ConfigurationError, match="already has an aggregate or a saga 'other'"):
        ops.saga("other", state=NotFlow, sends=[Ship])


def test_a_saga_state_type_belongs_to_one_owner() -> None:
    ops = BoundedContext("ops", namespace="io.test.ops")
    ops.aggregate("orders", state=NotFlow, id="order")
    with pytest.raises(ConfigurationError, match="NotFlow already belongs"):
        ops.saga("flow", state=NotFlow, sends=[Ship])


def test_context_lists_its_sagas_and_their_states() -> None:
    ops, flow = make()
    assert ops.sagas == (flow,)
    assert ops.get_saga("flow") is flow
    assert flow.full_name == "ops.flow"
    assert Flow in ops.states()
    with pytest.raises(ConfigurationError, match="has no saga 'nope'"):
        ops.get_saga("nope")


def test_introspection_lists_inputs() -> None:
    _, flow = make()
    assert flow.events == (Begin, Poke)
    assert flow.timer_names == ("remind",)
    assert flow.handles_outcome("Ship")
    assert not flow.handles_outcome("Bill")


def test_on_with_a_source_remembers_it_once() -> None:
    _, flow = make()
    other = BoundedContext("other", namespace="io.test.other")
    flow.on(Other, correlate=lambda e: e.flow, source=other)(lambda s, e: SagaStep(s))
    assert flow.sources == [other]


# --- correlate ------------------------------------------------------------------------


def test_correlate_names_the_instance() -> None:
    _, flow = make()
    assert flow.correlate(Poke(flow="f-9")) == "f-9"


@pytest.mark.parametrize("value", ["", None, 7])
def test_correlate_must_return_a_non_empty_str(value: Any) -> None:
    _, flow = make()
    flow.on(Other, correlate=lambda e: value)(lambda s, e: SagaStep(s))
    with pytest.raises(HandlerContractError, match="must return a non-empty str"):
        flow.correlate(Other(flow="x"))


def test_correlate_of_an_event_the_saga_does_not_read() -> None:
    _, flow = make()
    with pytest.raises(HandlerContractError, match="does not react to Other"):
        flow.correlate(Other(flow="x"))


# --- handle: routing ------------------------------------------------------------------


def test_a_start_event_creates_the_instance() -> None:
    _, flow = make()
    decided = handled(flow.handle(None, Begin(flow="f1"), meta()))
    assert decided.state == Flow(flow="f1", note="new")
    assert [c for _, c in decided.commands] == [Ship(order="f1"), Bill(order="f1")]
    assert decided.timers == {"remind": T0 + timedelta(hours=1)}
    assert decided.ended is False


def test_a_start_event_for_an_existing_instance_sees_its_state() -> None:
    _, flow = make()
    decided = handled(flow.handle(STARTED, Begin(flow="f1"), meta()))
    assert decided.state == Flow(flow="f1", note="existing")


def test_inputs_for_an_instance_that_does_not_exist_are_ignored_unless_they_start_it() -> None:
    _, flow = make()
    outcome = CommandOutcome("c", "Ship", "f1", OutcomeKind.ACCEPTED)
    assert flow.handle(None, Poke(flow="f1"), meta()) is None
    assert flow.handle(None, outcome, meta()) is None
    assert flow.handle(None, TimerFired("remind", T0), meta()) is None


def test_unhandled_inputs_are_ignored() -> None:
    _, flow = make()
    assert flow.handle(STARTED, Other(flow="f1"), meta()) is None
    rejected = CommandOutcome("c", "Bill", "f1", OutcomeKind.REJECTED, code="nope")
    assert flow.handle(STARTED, rejected, meta()) is None
    assert flow.handle(STARTED, TimerFired("unknown", T0), meta()) is None


def test_an_outcome_goes_to_the_handler_of_its_command_type() -> None:
    _, flow = make()
    outcome = CommandOutcome("c", "Ship", "f1", OutcomeKind.REJECTED, code="out_of_stock")
    decided = handled(flow.handle(STARTED, outcome, meta()))
    assert decided.state == Flow(flow="f1", note="ship rejected")


def test_a_timer_goes_to_its_handler_with_its_metadata() -> None:
    _, flow = make()
    due = T0 + timedelta(minutes=5)
    decided = handled(flow.handle(STARTED, TimerFired("remind", due), meta(at=due)))
    assert decided.state == Flow(flow="f1", note=f"remind at {due}")


def test_a_handler_with_three_parameters_gets_the_metadata() -> None:
    _, flow = make()
    decided = handled(flow.handle(STARTED, Poke(flow="f1"), meta(input_id="rec-42")))
    assert decided.state == Flow(flow="f1", step=1, note="rec-42")


def test_a_handler_must_return_a_saga_step() -> None:
    _, flow = make(lambda s, e, m: s)  # type: ignore[arg-type,return-value]
    with pytest.raises(HandlerContractError, match="must return a SagaStep, got Flow"):
        flow.handle(STARTED, Poke(flow="f1"), meta())


# --- handle: commands -----------------------------------------------------------------


def test_command_ids_are_the_saga_command_ids_of_their_positions() -> None:
    _, flow = make()
    decided = handled(flow.handle(None, Begin(flow="f1"), meta("f1", "in-1")))
    ids = [command_id for command_id, _ in decided.commands]
    assert ids == [
        saga_command_id("ops.flow", "f1", "in-1", 0),
        saga_command_id("ops.flow", "f1", "in-1", 1),
    ]
    assert all(i.version == 5 for i in ids)
    assert ids[0] != ids[1]


def test_command_ids_are_deterministic_and_differ_per_input_saga_id_and_saga() -> None:
    _, flow = make()

    def ids(m: SagaMetadata) -> list[uuid.UUID]:
        return [i for i, _ in handled(flow.handle(None, Begin(flow="f1"), m)).commands]

    first = ids(meta("f1", "in-1"))
    assert ids(meta("f1", "in-1")) == first
    assert ids(meta("f1", "in-1", at=T0 + timedelta(days=1))) == first
    assert set(ids(meta("f1", "in-2"))).isdisjoint(first)
    assert set(ids(meta("f2", "in-1"))).isdisjoint(first)
    base = saga_command_id("ops.flow", "f1", "in-1", 0)
    assert saga_command_id("ops.other", "f1", "in-1", 0) != base
    assert saga_command_id("ops.flow", "f1", "in-1", 1) != base


def test_sending_a_command_not_in_sends_is_a_contract_error() -> None:
    flow = poke_with(lambda s: SagaStep(s, send=[Ship(order="a"), Unsent(order="a")]))
    with pytest.raises(HandlerContractError, match="sent Unsent, which is not in its sends"):
        flow.handle(STARTED, Poke(flow="f1"), meta())


# --- handle: timers -------------------------------------------------------------------


def test_a_delay_counts_from_the_input_time_not_the_clock() -> None:
    flow = poke_with(lambda s: SagaStep(s, timers={"remind": timedelta(minutes=90)}))
    long_ago = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    decided = handled(flow.handle(STARTED, Poke(flow="f1"), meta(at=long_ago)))
    assert decided.timers == {"remind": long_ago + timedelta(minutes=90)}


def test_an_instant_is_resolved_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    at = datetime(2030, 5, 1, 16, 0, tzinfo=plus_two)
    flow = poke_with(lambda s: SagaStep(s, timers={"remind": at}))
    due = handled(flow.handle(STARTED, Poke(flow="f1"), meta())).timers["remind"]
    assert due == at
    assert due.tzinfo is UTC
    assert due.hour == 14


def test_a_delay_from_an_input_in_another_zone_is_utc() -> None:
    flow = poke_with(lambda s: SagaStep(s, timers={"remind": timedelta(hours=1)}))
    at = datetime(2030, 5, 1, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    due = handled(flow.handle(STARTED, Poke(flow="f1"), meta(at=at))).timers["remind"]
    assert due == datetime(2030, 5, 1, 15, 0, tzinfo=UTC)
    assert due.tzinfo is UTC


def test_a_naive_datetime_timer_is_a_contract_error() -> None:
    flow = poke_with(lambda s: SagaStep(s, timers={"remind": datetime(2030, 5, 1, 13, 0)}))
    with pytest.raises(HandlerContractError, match="'remind' must be a timedelta or an aware"):
        flow.handle(STARTED, Poke(flow="f1"), meta())


def test_a_timer_that_is_neither_instant_nor_delay_is_a_contract_error() -> None:
    flow = poke_with(lambda s: SagaStep(s, timers={"remind": 3600}))  # type: ignore[dict-item]
    with pytest.raises(HandlerContractError, match="got 3600"):
        flow.handle(STARTED, Poke(flow="f1"), meta())


def test_a_timer_without_handler_is_a_contract_error() -> None:
    flow = poke_with(lambda s: SagaStep(s, timers={"nudge": timedelta(hours=1)}))
    with pytest.raises(HandlerContractError, match="sets timer 'nudge' it has no handler for"):
        flow.handle(STARTED, Poke(flow="f1"), meta())


def test_cancel_marks_the_timer_cancelled() -> None:
    flow = poke_with(lambda s: SagaStep(s, cancel=["remind"]))
    decided = handled(flow.handle(STARTED, Poke(flow="f1"), meta()))
    assert list(decided.timers) == ["remind"]
    assert is_cancelled(decided.timers["remind"])
    assert not is_cancelled(T0)


def test_setting_and_cancelling_one_timer_in_one_step_keeps_the_setting() -> None:
    """Current behaviour (saga.py _resolve: ``timers.setdefault``): the set wins."""
    flow = poke_with(
        lambda s: SagaStep(s, timers={"remind": timedelta(hours=1)}, cancel=["remind"])
    )
    decided = handled(flow.handle(STARTED, Poke(flow="f1"), meta()))
    assert decided.timers == {"remind": T0 + timedelta(hours=1)}


# --- handle: state and end ------------------------------------------------------------


def test_end_drops_the_state() -> None:
    flow = poke_with(lambda s: SagaStep(s, send=[Bill(order="f1")], end=True))
    decided = handled(flow.handle(STARTED, Poke(flow="f1"), meta()))
    assert decided.ended is True
    assert decided.state is None
    assert [c for _, c in decided.commands] == [Bill(order="f1")]


def test_end_without_state_is_allowed() -> None:
    flow = poke_with(SagaStep(None, end=True))
    decided = handled(flow.handle(STARTED, Poke(flow="f1"), meta()))
    assert (decided.state, decided.ended) == (None, True)


def test_no_state_without_ending_is_a_contract_error() -> None:
    flow = poke_with(SagaStep(None))
    with pytest.raises(HandlerContractError, match="returned no state without ending"):
        flow.handle(STARTED, Poke(flow="f1"), meta())


def test_a_state_of_another_type_is_a_contract_error() -> None:
    flow = poke_with(SagaStep(NotFlow()))  # type: ignore[arg-type]
    with pytest.raises(HandlerContractError, match="returned state NotFlow, expected Flow"):
        flow.handle(STARTED, Poke(flow="f1"), meta())
