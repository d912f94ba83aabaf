"""A tiny domain with a timer and middleware, for the timer and middleware tests.

A reminder is scheduled with a delay; the ``alarm`` saga sets a timer for it and rings it
when it comes due. The middleware refuses every command of the principal ``mallory``, and
lets the alarm saga ring no VIP reminder (``vip-`` ids): both are ``forbidden``. The
``echo`` event handler copies every event to a topic, and fails on ``bad-`` reminders
until it is "fixed".
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from streamfold.domain import BoundedContext, Command, Event, Metadata, Rejected, State
from streamfold.domain.aggregate import WithTimers
from streamfold.domain.handlers import HandlerContext
from streamfold.domain.saga import SagaStep, TimerFired

timed = BoundedContext("timed", namespace="io.streamfold.timed")


class Schedule(Command):
    reminder_id: str
    delay_seconds: PositiveInt


class Ring(Command):
    reminder_id: str


class Scheduled(Event):
    reminder_id: str
    delay_seconds: int


class Rang(Event):
    reminder_id: str


class Reminder(State):
    reminder_id: str
    delay_seconds: int
    rang: bool = False


reminders = timed.aggregate("reminder", state=Reminder, id="reminder_id")


@reminders.decides(Schedule, creates=True)
def schedule(state: Reminder | None, cmd: Schedule) -> Scheduled:
    if state is not None:
        raise Rejected("already_exists", f"reminder {cmd.reminder_id} exists")
    return Scheduled(reminder_id=cmd.reminder_id, delay_seconds=cmd.delay_seconds)


@reminders.decides(Ring)
def ring(state: Reminder, cmd: Ring) -> Rang:
    if state.rang:
        raise Rejected("already_rang", f"reminder {cmd.reminder_id} rang already")
    return Rang(reminder_id=cmd.reminder_id)


class Hold(Command):
    """Hold the reminder for ``seconds``: an aggregate's own timer releases it."""

    reminder_id: str
    seconds: PositiveInt


class Held(Event):
    reminder_id: str
    seconds: int


class Released(Event):
    reminder_id: str


@reminders.decides(Hold)
def hold(state: Reminder, cmd: Hold) -> WithTimers:
    held = Held(reminder_id=cmd.reminder_id, seconds=cmd.seconds)
    return WithTimers([held], timers={"release": timedelta(seconds=cmd.seconds)})


@reminders.on_timer("release")
def release(state: Reminder, timer: TimerFired) -> Released:
    return Released(reminder_id=state.reminder_id)


@reminders.evolves(Held)
def held(state: Reminder, event: Held) -> Reminder:
    return state


@reminders.evolves(Released)
def released(state: Reminder, event: Released) -> Reminder:
    return state


@reminders.evolves(Scheduled)
def scheduled(state: Reminder | None, event: Scheduled) -> Reminder:
    return Reminder(reminder_id=event.reminder_id, delay_seconds=event.delay_seconds)


@reminders.evolves(Rang)
def rang(state: Reminder, event: Rang) -> Reminder:
    return state.model_copy(update={"rang": True})


@timed.middleware
def guard(command: Command, metadata: Metadata, state: Any, next: Any) -> Any:
    if metadata.principal == "mallory":
        raise Rejected("forbidden", "mallory may not send commands")
    vip = getattr(command, "reminder_id", "").startswith("vip-")
    if vip and metadata.principal == "saga:timed.alarm":
        raise Rejected("forbidden", "the alarm may not ring a VIP reminder")
    return next(command, metadata)


class Alarm(State):
    reminder_id: str


alarm = timed.saga("alarm", state=Alarm, sends=[Ring])


@alarm.on(Scheduled, correlate=lambda e: e.reminder_id, starts=True)
def set_alarm(state: Alarm | None, event: Scheduled) -> SagaStep[Alarm]:
    due = timedelta(seconds=event.delay_seconds)
    return SagaStep(Alarm(reminder_id=event.reminder_id), timers={"ring": due})


@alarm.on_timer("ring")
def ring_now(state: Alarm, timer: object) -> SagaStep[Alarm]:
    return SagaStep(None, send=[Ring(reminder_id=state.reminder_id)], end=True)


#: While this file (named by the environment) does not exist, the echo handler fails on
#: ``bad-`` reminders, as a webhook that is down would.
FIXED = os.environ.get("TIMED_ECHO_FIXED_FILE", "")


@timed.handler(
    "echo",
    on=[Scheduled, Rang],
    retries=2,
    backoff=timedelta(milliseconds=50),
    produces=["timed.echoes"],
)
def echo(event: Scheduled | Rang, context: HandlerContext) -> None:
    """Copy each event to ``timed.echoes`` (exactly once: through the context)."""
    if event.reminder_id.startswith("bad-") and not (FIXED and Path(FIXED).exists()):
        raise ConnectionError(f"the echo endpoint refused {event.reminder_id}")
    record = {
        "reminder_id": event.reminder_id,
        "event": type(event).__name__,
        "key": context.idempotency_key,
    }
    context.produce("timed.echoes", event.reminder_id, json.dumps(record))
