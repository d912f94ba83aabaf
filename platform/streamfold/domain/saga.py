"""A saga (process manager), declared with plain functions like an aggregate.

Declaration (see :meth:`streamfold.domain.context.BoundedContext.saga`)::

    purchase = retail.saga("purchase", state=PurchaseFlow, sends=[IssueInvoice, ScheduleDelivery])

    @purchase.on(PurchasePlaced, correlate=lambda e: e.purchase_id, starts=True)
    def placed(state: PurchaseFlow | None, event: PurchasePlaced, meta: SagaMetadata) -> SagaStep:
        return SagaStep(PurchaseFlow(...), send=[IssueInvoice(...), ScheduleDelivery(...)])

    @purchase.on_outcome(ScheduleDelivery)            # the result of a command it sent
    def delivery(state: PurchaseFlow, outcome: CommandOutcome) -> SagaStep: ...

    @purchase.on_timer("payment_due")                 # a timer it set
    def overdue(state: PurchaseFlow, timer: TimerFired) -> SagaStep: ...

A handler takes ``(state, input)`` or ``(state, input, metadata)`` and returns a
:class:`SagaStep`: the new state, the commands to send (each to the aggregate that handles
its type, which must be in ``sends``), the timers to set (a name and an instant or a delay;
setting a name again replaces it) or cancel, and whether the saga ends (its state and timers
are then deleted).

Instances: ``correlate(event)`` gives the saga id; one instance per id. An event handler
declared ``starts=True`` may see ``None`` state and create the instance; any other input for
an instance that does not exist (never started, or ended) is ignored and counted.

Execution: :meth:`Saga.handle` is the one code path the test kit, the in-process runner and
the worker run. It is pure: a delay is counted from the input's time
(:attr:`SagaMetadata.occurred_at`: the event's timestamp, a timer's due time), never from
the clock, so an input processed again decides the same step.
"""

from __future__ import annotations

import inspect
import re
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from streamfold.domain.messages import Command, Event, State
from streamfold.domain.timers import CANCELLED, is_cancelled, resolve_due
from streamfold.errors import ConfigurationError, HandlerContractError

__all__ = [
    "CommandOutcome",
    "OutcomeKind",
    "Saga",
    "SagaInput",
    "SagaMetadata",
    "SagaStep",
    "TimerFired",
    "is_cancelled",
    "saga_command_id",
]

S = TypeVar("S", bound=State)
F = TypeVar("F", bound=Callable[..., Any])

_TIMER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
#: The namespace of the ids of saga-sent commands (uuid5).
_COMMANDS = uuid.UUID("5d1f0a86-3b9e-4c1e-9a59-2f6d4f7b8e10")


def saga_command_id(saga: str, saga_id: str, input_id: str, position: int) -> uuid.UUID:
    """The id of the ``position``-th command a saga sends for one input: the same input,
    processed again after a crash, sends the same ids, which the aggregates deduplicate."""
    return uuid.uuid5(_COMMANDS, f"{saga}\x00{saga_id}\x00{input_id}\x00{position}")


class OutcomeKind(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The result of a command the saga sent, delivered back to it as an input."""

    command_id: str
    command_type: str
    aggregate_id: str | None
    outcome: OutcomeKind
    code: str | None = None
    message: str | None = None
    version: int = 0

    @property
    def accepted(self) -> bool:
        return self.outcome is OutcomeKind.ACCEPTED


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the saga set came due."""

    name: str
    due: datetime


SagaInput = Event | CommandOutcome | TimerFired


@dataclass(frozen=True, slots=True)
class SagaMetadata:
    """What the platform knows about a saga's input beyond its data."""

    saga_id: str
    #: Unique per input (the source record, or the timer and its due time).
    input_id: str
    #: The event's timestamp, or a timer's due time: delays count from here.
    occurred_at: datetime
    tenant: str | None = None
    principal: str | None = None
    #: The command that caused the input event (None for a timer).
    causation_id: str | None = None
    correlation_id: str | None = None
    #: The aggregate the input event came from, and its version after it.
    aggregate_id: str | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class SagaStep(Generic[S]):
    """What a saga handler decided for one input."""

    state: S | None
    send: Sequence[Command] = ()
    #: name -> an instant, or a delay from the input's time; a name set again is replaced.
    timers: Mapping[str, datetime | timedelta] = field(default_factory=dict)
    cancel: Sequence[str] = ()
    end: bool = False


@dataclass(frozen=True, slots=True)
class Decided(Generic[S]):
    """A step, resolved: timers as due instants, and the ids of the commands to send."""

    state: S | None
    commands: tuple[tuple[uuid.UUID, Command], ...]
    timers: dict[str, datetime]
    ended: bool


@dataclass(frozen=True, slots=True)
class _Handler:
    fn: Callable[..., Any]
    wants_metadata: bool
    starts: bool = False
    correlate: Callable[[Any], str] | None = None


class Saga(Generic[S]):
    """A saga type: its state, the inputs it reacts to, and the commands it may send."""

    def __init__(
        self, *, context: str, name: str, state: type[S], sends: Iterable[type[Command]]
    ) -> None:
        if not (isinstance(state, type) and issubclass(state, State)):
            raise ConfigurationError(f"saga {name!r}: state must be a State subclass")
        self.context = context
        self.name = name
        self.state_type: type[S] = state
        self.sends: tuple[type[Command], ...] = tuple(sends)
        if not self.sends or not all(
            isinstance(c, type) and issubclass(c, Command) for c in self.sends
        ):
            raise ConfigurationError(f"saga {name!r}: sends must list the Command types it sends")
        #: Other bounded contexts whose events it reads or whose aggregates it commands.
        self.sources: list[Any] = []
        self._events: dict[type[Event], _Handler] = {}
        self._outcomes: dict[type[Command], _Handler] = {}
        self._timers: dict[str, _Handler] = {}

    def __repr__(self) -> str:
        return f"Saga({self.context}.{self.name}, state={self.state_type.__name__})"

    @property
    def full_name(self) -> str:
        return f"{self.context}.{self.name}"

    # --- declaration --------------------------------------------------------------------

    def on(
        self,
        event: type[Event],
        *,
        correlate: Callable[[Any], str],
        starts: bool = False,
        source: Any = None,
    ) -> Callable[[F], F]:
        """Handle ``event``; ``correlate(event)`` names the instance; ``starts=True`` if the
        event may start one. ``source`` is the BoundedContext the event comes from when it
        is not the saga's own (its aggregates and commands are then known to the saga)."""
        if not (isinstance(event, type) and issubclass(event, Event)):
            raise ConfigurationError(f"{self!r}: on() takes an Event type, got {event!r}")
        if not callable(correlate):
            raise ConfigurationError(f"{self!r}: correlate must be a function of the event")
        if source is not None and source not in self.sources:
            self.sources.append(source)

        def register(fn: F) -> F:
            self._register(self._events, event, fn, event.__name__, starts, correlate)
            return fn

        return register

    def on_outcome(self, command: type[Command]) -> Callable[[F], F]:
        """Handle the results of the ``command`` type the saga sent (accepted, rejected,
        invalid). A rejected or invalid command with no handler is counted and logged."""
        if command not in self.sends:
            what = getattr(command, "__name__", repr(command))
            raise ConfigurationError(f"{self!r} does not send {what}")

        def register(fn: F) -> F:
            self._register(self._outcomes, command, fn, f"outcome of {command.__name__}")
            return fn

        return register

    def on_timer(self, name: str) -> Callable[[F], F]:
        """Handle the timer called ``name`` when it comes due."""
        if not isinstance(name, str) or not _TIMER_NAME.fullmatch(name):
            raise ConfigurationError(f"{self!r}: timer name {name!r} must be [A-Za-z0-9_.-]+")

        def register(fn: F) -> F:
            self._register(self._timers, name, fn, f"timer {name!r}")
            return fn

        return register

    def _register(
        self,
        table: dict[Any, _Handler],
        key: Any,
        fn: Callable[..., Any],
        what: str,
        starts: bool = False,
        correlate: Callable[[Any], str] | None = None,
    ) -> None:
        if key in table:
            raise ConfigurationError(f"{self!r} already handles {what}")
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) not in (2, 3):
            raise ConfigurationError(
                f"saga handler {fn.__qualname__} must take 2 or 3 positional parameters "
                f"(state, input[, metadata]), got {len(params)}"
            )
        _check_input_annotation(fn, params[1].name, key)
        table[key] = _Handler(fn, len(params) == 3, starts, correlate)

    # --- introspection ------------------------------------------------------------------

    @property
    def events(self) -> tuple[type[Event], ...]:
        """The event types the saga reacts to."""
        return tuple(self._events)

    @property
    def timer_names(self) -> tuple[str, ...]:
        return tuple(self._timers)

    def handles_outcome(self, command_type: str) -> bool:
        return any(c.__name__ == command_type for c in self._outcomes)

    def correlate(self, event: Event) -> str:
        """The id of the instance ``event`` is for."""
        handler = self._events.get(type(event))
        if handler is None or handler.correlate is None:
            raise HandlerContractError(f"{self!r} does not react to {type(event).__name__}")
        saga_id = handler.correlate(event)
        if not isinstance(saga_id, str) or not saga_id:
            raise HandlerContractError(
                f"{self!r}: correlate of {type(event).__name__} must return a non-empty str, "
                f"got {saga_id!r}"
            )
        return saga_id

    # --- execution ----------------------------------------------------------------------

    def handle(self, state: S | None, item: SagaInput, metadata: SagaMetadata) -> Decided[S] | None:
        """Decide one input for the instance ``metadata.saga_id`` at ``state``.

        Returns None when the saga does not handle the input: no handler for an outcome or
        a timer, or an input for an instance that does not exist and that cannot start one.
        """
        handler = self._handler_of(item)
        if handler is None or (state is None and not handler.starts):
            return None
        args = (state, item, metadata) if handler.wants_metadata else (state, item)
        step = handler.fn(*args)
        if not isinstance(step, SagaStep):
            raise HandlerContractError(
                f"saga handler {handler.fn.__qualname__} must return a SagaStep, "
                f"got {type(step).__name__}"
            )
        return self._resolve(step, metadata, handler.fn)

    def _handler_of(self, item: SagaInput) -> _Handler | None:
        if isinstance(item, TimerFired):
            return self._timers.get(item.name)
        if isinstance(item, CommandOutcome):
            for command, handler in self._outcomes.items():
                if command.__name__ == item.command_type:
                    return handler
            return None
        return self._events.get(type(item))

    def _resolve(
        self, step: SagaStep[Any], metadata: SagaMetadata, fn: Callable[..., Any]
    ) -> Decided[S]:
        if step.state is not None and not isinstance(step.state, self.state_type):
            raise HandlerContractError(
                f"saga handler {fn.__qualname__} returned state {type(step.state).__name__}, "
                f"expected {self.state_type.__name__}"
            )
        if step.state is None and not step.end:
            raise HandlerContractError(
                f"saga handler {fn.__qualname__} returned no state without ending the saga"
            )
        commands = []
        for position, command in enumerate(step.send):
            if type(command) not in self.sends:
                raise HandlerContractError(
                    f"{self!r} sent {type(command).__name__}, which is not in its sends"
                )
            command_id = saga_command_id(
                self.full_name, metadata.saga_id, metadata.input_id, position
            )
            commands.append((command_id, command))
        timers: dict[str, datetime] = {}
        for name, when in step.timers.items():
            if name not in self._timers:
                raise HandlerContractError(f"{self!r} sets timer {name!r} it has no handler for")
            timers[name] = resolve_due(name, when, metadata.occurred_at)
        for name in step.cancel:
            timers.setdefault(name, CANCELLED)
        state = None if step.end else step.state
        return Decided(state, tuple(commands), timers, step.end)


def _check_input_annotation(fn: Callable[..., Any], name: str, key: Any) -> None:
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        return
    hint = hints.get(name)
    declared: type[Any]
    if isinstance(key, type) and issubclass(key, Event):
        declared = key
    else:
        declared = TimerFired if isinstance(key, str) else CommandOutcome
    if isinstance(hint, type) and not issubclass(declared, hint):
        raise ConfigurationError(
            f"saga handler {fn.__qualname__} handles {declared.__name__} "
            f"but its parameter {name!r} is annotated {hint.__name__}"
        )
