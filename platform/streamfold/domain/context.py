"""A bounded context: a named group of aggregates and sagas with one Avro namespace.

The context is the unit a topology deploys and the unit schemas are generated for
(``schemas/<context>/``). It guarantees that every message type belongs to one aggregate and
that record names are unique, so a command type alone routes to its aggregate and a record
name alone identifies its schema.

Command middleware is declared here too (:meth:`BoundedContext.middleware`): an explicit,
ordered chain of functions ``(command, metadata, state, next) -> Decision`` around every
decide of the context's aggregates, for authorisation by principal and tenant, preconditions
and audit enrichment. The first declared is the outermost. It runs inside
:meth:`~streamfold.domain.aggregate.Aggregate.handle`, so the worker applies it to every
command whatever its source (HTTP, SDK, Kafka, a saga, a timer) and the test kit runs it
too. It must do no I/O and read no clock: a command processed again after a crash must
decide the same. A :class:`~streamfold.errors.Rejected` it raises is a normal rejection.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from streamfold.domain.aggregate import Aggregate, IdSpec, Middleware
from streamfold.domain.handlers import EventHandler, declare
from streamfold.domain.messages import Command, Event, Message, State
from streamfold.domain.naming import ContextTopics, context_topics, validate_name
from streamfold.domain.saga import Saga
from streamfold.errors import ConfigurationError

__all__ = ["BoundedContext", "import_context"]

S = TypeVar("S", bound=State)
F = TypeVar("F", bound=Callable[..., Any])

_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class BoundedContext:
    """A bounded context; declare its aggregates with :meth:`aggregate`."""

    def __init__(self, name: str, *, namespace: str) -> None:
        self.name = validate_name("context", name)
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(f"Avro namespace {namespace!r} is not dotted identifiers")
        self.namespace = namespace
        self.topics: ContextTopics = context_topics(name)
        self._aggregates: dict[str, Aggregate[Any]] = {}
        self._sagas: dict[str, Saga[Any]] = {}
        self._handlers: dict[str, EventHandler] = {}
        self._middleware: list[Middleware] = []
        self._owners: dict[type[Message], Aggregate[Any] | Saga[Any]] = {}
        self._names: dict[str, type[Message]] = {}

    def __repr__(self) -> str:
        return f"BoundedContext({self.name!r}, namespace={self.namespace!r})"

    def aggregate(
        self,
        name: str,
        *,
        state: type[S],
        id: IdSpec,
        soft_delete: bool = False,
    ) -> Aggregate[S]:
        """Declare an aggregate type; ``id`` is a command field name or ``command -> str``."""
        self._check_new_name("aggregate", name)
        aggregate: Aggregate[S] = Aggregate(
            context=self.name,
            name=name,
            state=state,
            id=id,
            soft_delete=soft_delete,
            claim=self._claim,
            middleware=self._middleware,
        )
        self._aggregates[name] = aggregate
        return aggregate

    def saga(self, name: str, *, state: type[S], sends: Iterable[type[Command]]) -> Saga[S]:
        """Declare a saga (see :mod:`streamfold.domain.saga`); ``sends`` lists the command
        types it may send, each handled by an aggregate of this context or of another."""
        self._check_new_name("saga", name)
        saga: Saga[S] = Saga(context=self.name, name=name, state=state, sends=sends)
        self._claim(state, saga)
        self._sagas[name] = saga
        return saga

    def handler(
        self,
        name: str,
        *,
        on: Iterable[type[Event]],
        retries: int = 3,
        backoff: timedelta = timedelta(milliseconds=200),
        sends: Iterable[type[Command]] = (),
        produces: Iterable[str] = (),
    ) -> Callable[[F], F]:
        """Declare an event handler ``(event, context) -> None`` (see
        :mod:`streamfold.domain.handlers`) on the event types ``on``; it may send the
        command types ``sends`` and produce to the topics ``produces``."""

        def register(fn: F) -> F:
            if name in self._handlers:
                raise ConfigurationError(f"{self!r} already has a handler {name!r}")
            self._handlers[name] = declare(
                self.name, name, fn, on, retries, backoff, sends, produces
            )
            return fn

        return register

    @property
    def handlers(self) -> tuple[EventHandler, ...]:
        """The event handlers, in declaration order."""
        return tuple(self._handlers.values())

    def get_handler(self, name: str) -> EventHandler:
        try:
            return self._handlers[name]
        except KeyError:
            raise ConfigurationError(f"{self!r} has no event handler {name!r}") from None

    def middleware(self, fn: Middleware) -> Middleware:
        """Add ``fn`` to the command middleware, after (inside) those declared before it."""
        if not callable(fn):
            raise ConfigurationError(f"middleware must be a function, got {fn!r}")
        self._middleware.append(fn)
        return fn

    @property
    def middlewares(self) -> tuple[Middleware, ...]:
        """The command middleware, outermost first."""
        return tuple(self._middleware)

    def _check_new_name(self, kind: str, name: str) -> None:
        validate_name(kind, name)
        if name in self._aggregates or name in self._sagas:
            raise ConfigurationError(f"{self!r} already has an aggregate or a saga {name!r}")

    def _claim(self, message: type[Message], aggregate: Aggregate[Any] | Saga[Any]) -> None:
        owner = self._owners.get(message)
        if owner is not None and owner is not aggregate and not issubclass(message, Event):
            raise ConfigurationError(
                f"{message.__name__} already belongs to {owner!r}; a command or state type "
                "belongs to one aggregate"
            )
        other = self._names.get(message.__name__)
        if other is not None and other is not message:
            raise ConfigurationError(
                f"two message types named {message.__name__} in {self!r} "
                f"({other.__module__} and {message.__module__}): record names must be unique"
            )
        self._owners.setdefault(message, aggregate)
        self._names[message.__name__] = message

    # --- lookup -------------------------------------------------------------------------

    @property
    def aggregates(self) -> tuple[Aggregate[Any], ...]:
        """The aggregates, in declaration order."""
        return tuple(self._aggregates.values())

    @property
    def sagas(self) -> tuple[Saga[Any], ...]:
        """The sagas, in declaration order."""
        return tuple(self._sagas.values())

    def get_saga(self, name: str) -> Saga[Any]:
        """The saga called ``name``."""
        try:
            return self._sagas[name]
        except KeyError:
            raise ConfigurationError(f"{self!r} has no saga {name!r}") from None

    def get(self, name: str) -> Aggregate[Any]:
        """The aggregate called ``name``."""
        try:
            return self._aggregates[name]
        except KeyError:
            raise ConfigurationError(f"{self!r} has no aggregate {name!r}") from None

    def aggregate_for(self, command: type[Command]) -> Aggregate[Any]:
        """The aggregate that handles ``command``."""
        for aggregate in self._aggregates.values():
            if command in aggregate.commands:
                return aggregate
        raise ConfigurationError(f"no aggregate of {self!r} handles {command.__name__}")

    def full_name(self, message: type[Message]) -> str:
        """The Avro full name of a message type: ``{namespace}.{ClassName}``."""
        return f"{self.namespace}.{message.__name__}"

    def commands(self) -> tuple[type[Command], ...]:
        """Every command type of the context."""
        return tuple(c for a in self.aggregates for c in a.commands)

    def events(self) -> tuple[type[Event], ...]:
        """Every event type of the context, each once."""
        return tuple(dict.fromkeys(e for a in self.aggregates for e in a.events))

    def states(self) -> tuple[type[State], ...]:
        """Every state type of the context: its aggregates', then its sagas'."""
        return (
            *(a.state_type for a in self.aggregates),
            *(s.state_type for s in self.sagas),
        )


def import_context(reference: str) -> BoundedContext:
    """The bounded context that ``module:attribute`` names (topology and connector files)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"context must be module:attribute, not {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    context = getattr(module, attribute, None)
    if not isinstance(context, BoundedContext):
        raise ConfigurationError(f"{reference!r} is not a BoundedContext")
    return context
