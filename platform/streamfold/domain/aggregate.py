"""An aggregate type, declared with plain functions and executed by one pure function.

Declaration (see :meth:`streamfold.domain.context.BoundedContext.aggregate`)::

    stock = retail.aggregate("store_stock", state=StoreStock, id=lambda c: f"{c.store}/{c.item}")

    @stock.decides(ReceiveSupply, creates=True)   # the command may create the aggregate
    def receive_supply(state: StoreStock | None, cmd: ReceiveSupply) -> SupplyReceived: ...

    @stock.evolves(SupplyReceived)                # `| None`: it may be the first event
    def supply_received(state: StoreStock | None, event: SupplyReceived) -> StoreStock: ...

    @stock.decides(RecordSale)                    # runs only on an existing aggregate
    def record_sale(state: StoreStock, cmd: RecordSale) -> SaleRecorded: ...

The decorators register the function and return it unchanged, so it stays an ordinary,
type-checked, directly testable function. A decide function may declare a third parameter to
receive the command's :class:`~streamfold.domain.messages.Metadata`.

Creation is declared once, on the command: ``decides(..., creates=True)`` lets the command
run on an aggregate that does not exist yet (any other gets ``not_found`` first, so its
decide never sees ``None`` and may annotate its state as non-optional). An evolve function
says by its own signature whether its event may be the first: a state parameter annotated
``State | None`` (or ``Optional``, or ``Any``) receives ``None`` for the first event; one
annotated ``State`` never does (folding its event onto no state is a contract error). An
unannotated evolve function takes ``evolves(..., creates=True)`` to say the same.

Execution: :meth:`Aggregate.handle` is the single code path that the test kit and the worker
both run. Its steps, in order:

1. find the decide function of the command's type (or the built-in soft delete / recover)
   and the aggregate id;
2. check the expected version, if the metadata carries one (``version_conflict``);
3. built-in soft delete / recover commands are decided by the platform;
4. reject commands to a deleted aggregate (``aggregate_deleted``);
5. reject a non-creating command to an aggregate that does not exist (``not_found``);
6. call the decide function (it may raise :class:`~streamfold.errors.Rejected`);
7. fold the events into the state with the evolve functions, one version per event.

The context's command middleware (:meth:`~streamfold.domain.context.BoundedContext.
middleware`) runs around steps 2-7, outermost first: each gets ``(command, metadata, state,
next)`` and returns the decision, calling ``next(command, metadata)`` to go on (or raising
:class:`~streamfold.errors.Rejected`, or returning without calling it).

It is one module, over 500 lines, because it is one concept: the declaration checks (the
signatures, the annotations, what may create) are the contract that the one execution path
relies on, so both read the same handler tables here.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import create_model

from streamfold.domain.messages import (
    AggregateDeleted,
    AggregateRecovered,
    Command,
    DeleteAggregate,
    Event,
    Message,
    Metadata,
    RecoverAggregate,
    State,
)
from streamfold.domain.naming import AggregateTopics, aggregate_topics
from streamfold.domain.timers import CANCELLED, resolve_due
from streamfold.errors import ConfigurationError, HandlerContractError, Rejected

__all__ = [
    "CANCELLED",
    "Aggregate",
    "Decision",
    "HandlerContractError",
    "Snapshot",
    "SoftDelete",
    "WithTimers",
]

S = TypeVar("S", bound=State)
F = TypeVar("F", bound=Callable[..., Any])

IdSpec = str | Callable[[Any], str]

#: ``next(command, metadata) -> Decision``, the rest of the chain.
Next = Callable[[Command, Metadata], "Decision[Any]"]
#: ``(command, metadata, state, next) -> Decision``.
Middleware = Callable[[Command, Metadata, Any, Next], "Decision[Any]"]


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[S]):
    """An aggregate at a version: its state (``None`` before creation) and deleted flag."""

    state: S | None = None
    version: int = 0
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class WithTimers:
    """What a decide returns to set or cancel the aggregate's timers beside its events::

        return WithTimers([SeatReserved(...)], timers={"expire": timedelta(minutes=15)})

    A delay counts from the command's ``issued_at`` (a timer's: its due time), so a
    decision made again decides the same instant; setting a name again replaces it. An
    ``on_timer`` decide of the aggregate handles the timer when it comes due.
    """

    events: Sequence[Event] | Event = ()
    timers: Mapping[str, datetime | timedelta] = field(default_factory=dict)
    cancel: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """The outcome of an accepted command: its events and the aggregate after them."""

    aggregate_id: str
    events: tuple[Event, ...]
    state: S | None
    version: int
    deleted: bool = False
    #: Timers to set (name -> due, aware UTC) or cancel (:data:`CANCELLED`).
    timers: Mapping[str, datetime] = field(default_factory=dict)

    @property
    def event_versions(self) -> range:
        """The version each event gives the aggregate, in order (1-based, no gaps)."""
        return range(self.version - len(self.events) + 1, self.version + 1)


@dataclass(frozen=True, slots=True)
class SoftDelete:
    """The four built-in soft-delete messages of one aggregate type."""

    delete: type[DeleteAggregate]
    deleted: type[AggregateDeleted]
    recover: type[RecoverAggregate]
    recovered: type[AggregateRecovered]

    @classmethod
    def for_state(cls, state: type[State]) -> SoftDelete:
        """Derive ``Delete{S}``, ``{S}Deleted``, ``Recover{S}``, ``{S}Recovered`` for state S."""
        name, module = state.__name__, state.__module__

        def derive(base: type[Message], new_name: str) -> Any:
            return create_model(new_name, __base__=base, __module__=module, __doc__=base.__doc__)

        return cls(
            delete=derive(DeleteAggregate, f"Delete{name}"),
            deleted=derive(AggregateDeleted, f"{name}Deleted"),
            recover=derive(RecoverAggregate, f"Recover{name}"),
            recovered=derive(AggregateRecovered, f"{name}Recovered"),
        )


@dataclass(frozen=True, slots=True)
class _Evolver:
    fn: Callable[..., Any]
    creates: bool


@dataclass(frozen=True, slots=True)
class _Decider:
    fn: Callable[..., Any]
    creates: bool
    wants_metadata: bool


class Aggregate(Generic[S]):
    """An aggregate type: its state model, id, decide and evolve functions, and topics.

    Create it with :meth:`BoundedContext.aggregate`, which also checks that its message types
    are unique in the context.
    """

    def __init__(
        self,
        *,
        context: str,
        name: str,
        state: type[S],
        id: IdSpec,
        soft_delete: bool = False,
        claim: Callable[[type[Message], Aggregate[Any]], None] | None = None,
        middleware: list[Middleware] | None = None,
    ) -> None:
        if not (isinstance(state, type) and issubclass(state, State)):
            raise ConfigurationError(f"aggregate {name!r}: state must be a State subclass")
        if not (isinstance(id, str) or callable(id)):
            raise ConfigurationError(f"aggregate {name!r}: id must be a field name or a function")
        self.name = name
        self.context = context
        self.state_type: type[S] = state
        self.topics: AggregateTopics = aggregate_topics(context, name)
        self._id = id
        self._claim = claim
        #: The context's middleware list itself (middleware declared later applies too).
        self._middleware: list[Middleware] = middleware if middleware is not None else []
        self._deciders: dict[type[Command], _Decider] = {}
        self._timers: dict[str, _Decider] = {}
        self._evolvers: dict[type[Event], _Evolver] = {}
        self.soft_delete: SoftDelete | None = SoftDelete.for_state(state) if soft_delete else None
        self._claim_type(state)
        if self.soft_delete is not None:
            for message in (
                self.soft_delete.delete,
                self.soft_delete.deleted,
                self.soft_delete.recover,
                self.soft_delete.recovered,
            ):
                self._claim_type(message)

    def __repr__(self) -> str:
        return f"Aggregate({self.context}.{self.name}, state={self.state_type.__name__})"

    # --- declaration --------------------------------------------------------------------

    def decides(self, command: type[Command], *, creates: bool = False) -> Callable[[F], F]:
        """Register a decide function ``(state | None, command[, metadata]) -> event(s)``."""
        if not (isinstance(command, type) and issubclass(command, Command)):
            raise ConfigurationError(f"{self!r}: decides() takes a Command type, got {command!r}")
        if issubclass(command, DeleteAggregate | RecoverAggregate):
            raise ConfigurationError(f"{self!r}: soft delete commands are built in")
        if isinstance(self._id, str) and self._id not in command.model_fields:
            raise ConfigurationError(
                f"{self!r}: command {command.__name__} has no id field {self._id!r}"
            )

        def register(fn: F) -> F:
            params = _positional_params(fn, expected=(2, 3), role="decide")
            _check_annotation(fn, params[1], command, role="decide")
            if command in self._deciders:
                raise ConfigurationError(f"{self!r}: {command.__name__} already has a decide")
            self._claim_type(command)
            self._deciders[command] = _Decider(fn, creates, wants_metadata=len(params) == 3)
            return fn

        return register

    def evolves(self, event: type[Event], *, creates: bool | None = None) -> Callable[[F], F]:
        """Register an evolve function ``(state | None, event) -> state``.

        Its event may be the aggregate's first (its state is then ``None``) when its state
        parameter is annotated to admit ``None``, or with ``creates=True`` (which wins over
        the annotation, as ``creates=False`` does); folding any other event onto no state is
        a contract error.
        """
        if not (isinstance(event, type) and issubclass(event, Event)):
            raise ConfigurationError(f"{self!r}: evolves() takes an Event type, got {event!r}")

        def register(fn: F) -> F:
            params = _positional_params(fn, expected=(2,), role="evolve")
            _check_annotation(fn, params[1], event, role="evolve")
            if event in self._evolvers:
                raise ConfigurationError(f"{self!r}: {event.__name__} already has an evolve")
            self._claim_type(event)
            may_create = creates if creates is not None else _admits_none(params[0])
            self._evolvers[event] = _Evolver(fn, may_create)
            return fn

        return register

    def on_timer(self, name: str) -> Callable[[F], F]:
        """Register the decide ``(state, timer[, metadata]) -> event(s)`` of the timer
        ``name`` (set by a decide returning :class:`WithTimers`); it runs when the timer
        comes due, on the aggregate as it is then."""

        def register(fn: F) -> F:
            params = _positional_params(fn, expected=(2, 3), role="timer decide")
            if name in self._timers:
                raise ConfigurationError(f"{self!r}: timer {name!r} already has a decide")
            self._timers[name] = _Decider(fn, False, wants_metadata=len(params) == 3)
            return fn

        return register

    @property
    def timer_names(self) -> tuple[str, ...]:
        return tuple(self._timers)

    def handle_timer(
        self,
        state: S | None,
        version: int,
        timer: Any,
        metadata: Metadata,
        *,
        aggregate_id: str,
        deleted: bool = False,
    ) -> Decision[S] | None:
        """Decide the due timer ``timer`` (a :class:`~streamfold.domain.saga.TimerFired`);
        None when the aggregate no longer exists or is deleted. No middleware runs: no
        command did this."""
        decider = self._timers.get(timer.name)
        if decider is None:
            raise HandlerContractError(f"{self!r} has no decide for timer {timer.name!r}")
        if state is None or deleted:
            return None
        args = (state, timer, metadata) if decider.wants_metadata else (state, timer)
        events, timers = self._decided(decider.fn(*args), decider.fn, metadata)
        after = self.fold(events, Snapshot(state, version, deleted))
        return Decision(
            aggregate_id, tuple(events), after.state, after.version, after.deleted, timers
        )

    def _decided(
        self, result: object, fn: Callable[..., Any], meta: Metadata
    ) -> tuple[list[Event], dict[str, datetime]]:
        """A decide's events, and its timers resolved to due instants."""
        if not isinstance(result, WithTimers):
            return _as_events(result, fn), {}
        timers: dict[str, datetime] = {}
        for name, when in result.timers.items():
            if name not in self._timers:
                raise HandlerContractError(f"{self!r} sets timer {name!r} it has no decide for")
            timers[name] = resolve_due(name, when, meta.issued_at)
        for name in result.cancel:
            timers.setdefault(name, CANCELLED)
        return _as_events(result.events, fn), timers

    def _claim_type(self, message: type[Message]) -> None:
        if self._claim is not None:
            self._claim(message, self)

    # --- introspection ------------------------------------------------------------------

    @property
    def commands(self) -> tuple[type[Command], ...]:
        """Every command type this aggregate handles, built-in ones last."""
        builtin: tuple[type[Command], ...] = ()
        if self.soft_delete is not None:
            builtin = (self.soft_delete.delete, self.soft_delete.recover)
        return (*self._deciders, *builtin)

    @property
    def events(self) -> tuple[type[Event], ...]:
        """Every event type this aggregate evolves with, built-in ones last."""
        builtin: tuple[type[Event], ...] = ()
        if self.soft_delete is not None:
            builtin = (self.soft_delete.deleted, self.soft_delete.recovered)
        return (*self._evolvers, *builtin)

    @property
    def deletion(self) -> SoftDelete:
        """The soft-delete messages of an aggregate declared with ``soft_delete=True``, typed:
        ``deletion.delete(aggregate_id=..., reason=...)`` is its delete command (a
        :class:`~streamfold.domain.messages.DeleteAggregate`), ``deletion.deleted`` its event,
        ``deletion.recover`` and ``deletion.recovered`` the way back. A
        :class:`~streamfold.errors.ConfigurationError` for an aggregate without soft delete.
        """
        if self.soft_delete is None:
            raise ConfigurationError(f"{self!r} has no soft delete (declare soft_delete=True)")
        return self.soft_delete

    def creates(self, command: type[Command]) -> bool:
        """Whether ``command`` may create the aggregate."""
        decider = self._deciders.get(command)
        return decider is not None and decider.creates

    @property
    def id_field(self) -> str | None:
        """The command field that holds the aggregate id (None when a function computes it)."""
        return self._id if isinstance(self._id, str) else None

    def aggregate_id(self, command: Command) -> str:
        """The id of the aggregate ``command`` addresses (the Kafka key)."""
        if isinstance(command, DeleteAggregate | RecoverAggregate):
            return command.aggregate_id
        value = getattr(command, self._id) if isinstance(self._id, str) else self._id(command)
        if not isinstance(value, str) or not value:
            raise HandlerContractError(
                f"{self!r}: id of {type(command).__name__} must be a non-empty str, got {value!r}"
            )
        return value

    # --- execution ----------------------------------------------------------------------

    def handle(
        self,
        state: S | None,
        version: int,
        command: Command,
        metadata: Metadata | None = None,
        *,
        deleted: bool = False,
        aggregate_id: str | None = None,
    ) -> Decision[S]:
        """Decide ``command`` against the aggregate at ``version``; raise ``Rejected`` to refuse.

        Pure: the same inputs (metadata included) give the same decision; nothing is stored
        or sent. Without metadata, a fresh :class:`Metadata` (now, a new command id) is used.
        ``aggregate_id``, when the caller has already computed it, saves computing it again.
        """
        # 1. the decide function and the aggregate id
        sd = self.soft_delete
        builtin = sd is not None and isinstance(command, sd.delete | sd.recover)
        decider = self._deciders.get(type(command))
        if decider is None and not builtin:
            raise HandlerContractError(f"{self!r} has no decide for {type(command).__name__}")
        if aggregate_id is None:
            aggregate_id = self.aggregate_id(command)
        meta = metadata if metadata is not None else Metadata()
        if not self._middleware:
            return self._decide(state, version, command, meta, deleted, aggregate_id, decider)
        known = aggregate_id

        def core(cmd: Command, md: Metadata) -> Decision[S]:
            if cmd is not command and (
                type(cmd) is not type(command) or self.aggregate_id(cmd) != known
            ):
                raise HandlerContractError(
                    "middleware may change a command's fields, not its type or aggregate id"
                )
            return self._decide(state, version, cmd, md, deleted, known, decider)

        chain: Next = core
        for middleware in reversed(self._middleware):
            chain = _link(middleware, state, chain)
        decision = chain(command, meta)
        if not isinstance(decision, Decision):
            raise HandlerContractError(
                f"middleware must return the Decision of next(), got {type(decision).__name__}"
            )
        return decision

    def _decide(
        self,
        state: S | None,
        version: int,
        command: Command,
        meta: Metadata,
        deleted: bool,
        aggregate_id: str | None,
        decider: _Decider | None,
    ) -> Decision[S]:
        """Steps 2-7 of :meth:`handle`."""
        if aggregate_id is None:
            aggregate_id = self.aggregate_id(command)
        label = f"{self.name} {aggregate_id!r}"
        # 2. optimistic concurrency
        if meta.expected_version is not None and meta.expected_version != version:
            raise Rejected(
                "version_conflict",
                f"{label} is at version {version}, expected {meta.expected_version}",
            )
        # 3. built-in soft delete / recover
        timers: dict[str, datetime] = {}
        if decider is None:
            events = self._soft_delete(state, command, label, deleted=deleted)
        else:
            # 4. - 6. deleted, not found, then the domain's own decision
            if deleted:
                raise Rejected("aggregate_deleted", f"{label} is deleted")
            if state is None and not decider.creates:
                raise Rejected("not_found", f"{label} does not exist")
            args = (state, command, meta) if decider.wants_metadata else (state, command)
            events, timers = self._decided(decider.fn(*args), decider.fn, meta)
        # 7. fold
        after = self.fold(events, Snapshot(state, version, deleted))
        return Decision(
            aggregate_id, tuple(events), after.state, after.version, after.deleted, timers
        )

    def _soft_delete(
        self, state: S | None, command: Command, label: str, *, deleted: bool
    ) -> list[Event]:
        sd = self.soft_delete
        assert sd is not None and isinstance(command, DeleteAggregate | RecoverAggregate)
        if state is None:
            raise Rejected("not_found", f"{label} does not exist")
        if isinstance(command, sd.recover):
            if not deleted:
                raise Rejected("not_deleted", f"{label} is not deleted")
            return [sd.recovered(aggregate_id=command.aggregate_id, reason=command.reason)]
        if deleted:
            raise Rejected("aggregate_deleted", f"{label} is already deleted")
        return [sd.deleted(aggregate_id=command.aggregate_id, reason=command.reason)]

    def evolve(self, state: S | None, event: Event) -> S:
        """Apply one domain event with its evolve function."""
        evolver = self._evolvers.get(type(event))
        if evolver is None:
            raise HandlerContractError(f"{self!r} has no evolve for {type(event).__name__}")
        if state is None and not evolver.creates:
            raise HandlerContractError(
                f"{type(event).__name__} cannot be the first event of {self.name} (annotate "
                f"the state of {evolver.fn.__qualname__} as {self.state_type.__name__} | None "
                "if it may create it)"
            )
        new_state = evolver.fn(state, event)
        if not isinstance(new_state, self.state_type):
            raise HandlerContractError(
                f"evolve {evolver.fn.__qualname__} returned {type(new_state).__name__}, "
                f"expected {self.state_type.__name__}"
            )
        return new_state

    def fold(self, events: Iterable[Event], start: Snapshot[S] | None = None) -> Snapshot[S]:
        """Left-fold ``events`` onto ``start`` (nothing by default); one version per event."""
        start = start if start is not None else Snapshot()
        state, version, deleted = start.state, start.version, start.deleted
        for event in events:
            if isinstance(event, AggregateDeleted | AggregateRecovered):
                deleted = isinstance(event, AggregateDeleted)
            else:
                state = self.evolve(state, event)
            version += 1
        return Snapshot(state, version, deleted)


def _link(middleware: Middleware, state: Any, rest: Next) -> Next:
    def step(command: Command, metadata: Metadata) -> Decision[Any]:
        return middleware(command, metadata, state, rest)

    return step


def _as_events(result: object, fn: Callable[..., Any]) -> list[Event]:
    items: list[object] = list(result) if isinstance(result, list | tuple) else [result]
    events: list[Event] = []
    for item in items:
        if not isinstance(item, Event):
            raise HandlerContractError(
                f"decide {fn.__qualname__} must return an Event or a list of Events, "
                f"got {type(item).__name__}"
            )
        events.append(item)
    return events


def _positional_params(
    fn: Callable[..., Any], *, expected: tuple[int, ...], role: str
) -> list[inspect.Parameter]:
    if not callable(fn):
        raise ConfigurationError(f"{role} handler must be a function, got {fn!r}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) not in expected:
        want = " or ".join(str(n) for n in expected)
        raise ConfigurationError(
            f"{role} {fn.__qualname__} must take {want} positional parameters, got {len(params)}"
        )
    return params


_ADMITS_NONE = re.compile(r"\bNone\b|\bOptional\[|^(typing\.)?Any$|^object$")


def _admits_none(param: inspect.Parameter) -> bool:
    """Whether the annotation of ``param`` admits None (``X | None``, ``Optional[X]``,
    ``Any``); False for none at all. A string annotation (postponed evaluation) is read as
    written, so a name defined later in the module needs no resolving."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return False
    if isinstance(annotation, str):
        return _ADMITS_NONE.search(annotation.strip()) is not None
    if annotation is Any or annotation is object or annotation is None:
        return True
    return type(None) in typing.get_args(annotation)


def _check_annotation(
    fn: Callable[..., Any], param: inspect.Parameter, declared: type[Message], *, role: str
) -> None:
    """Fail if the handler's parameter annotation cannot accept the declared message type."""
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        return  # annotations that cannot be resolved here are left to the type checker
    hint = hints.get(param.name)
    if isinstance(hint, type) and not issubclass(declared, hint):
        raise ConfigurationError(
            f"{role} {fn.__qualname__} is registered for {declared.__name__} "
            f"but its parameter {param.name!r} is annotated {hint.__name__}"
        )
