"""Event handlers: user code run on events, for side effects (an e-mail, a webhook).

Declaration (see :meth:`streamfold.domain.context.BoundedContext.handler`)::

    @retail.handler("notify_customer", on=[PurchaseClosed], retries=3)
    def notify(event: PurchaseClosed, context: HandlerContext) -> None:
        if event.reason:
            mailer.send(event.customer_id, ..., idempotency_key=context.idempotency_key)

A handler runs in a consumer group of its own, in order per aggregate. When it raises, it
is called again after ``backoff`` (doubling each time, ``retries`` times); when retries
run out, the event goes to the handler's dead-letter topic with the error, and its
aggregate is **parked**: the later events of that aggregate wait behind it (in the same
dead-letter topic, reason ``parked_behind``) while the other aggregates go on, until
``streamfold dlq retry`` (or ``skip``) releases it, in order.

Delivery is at least once: an event whose handler ran may run again after a crash before
its offset committed. :attr:`HandlerContext.idempotency_key` is the same every time one
event is handled (a replay from the dead-letter topic included), so a side effect can be
deduplicated downstream. What a handler emits through its context
(:meth:`HandlerContext.send` a command, :meth:`HandlerContext.produce` a record) is
produced in the transaction that commits the event's offset: a handler that only emits
that way runs exactly once.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from streamfold.domain.messages import Command, Event
from streamfold.errors import ConfigurationError

__all__ = ["EventHandler", "HandlerContext"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class HandlerContext(Protocol):
    """What a handler is given beside its event."""

    @property
    def idempotency_key(self) -> str:
        """The same for every run of one event: deduplicate side effects with it."""
        ...

    @property
    def aggregate_id(self) -> str:
        """The id of the aggregate the event came from."""
        ...

    @property
    def version(self) -> int | None:
        """The aggregate's version after the event."""
        ...

    def send(self, command: Command) -> None:
        """Send a command, in the transaction of the event's offset (exactly once)."""
        ...

    def produce(self, topic: str, key: str | bytes | None, value: str | bytes | None) -> None:
        """Produce a record to one of the handler's ``produces`` topics, in the transaction
        of the event's offset (exactly once)."""
        ...


@dataclass(frozen=True, slots=True)
class EventHandler:
    """A declared handler: its name, the event types it takes, its function and retries."""

    context: str
    name: str
    events: tuple[type[Event], ...]
    fn: Callable[[Any, HandlerContext], Any]
    retries: int
    backoff: timedelta
    #: Command types it may send through its context.
    sends: tuple[type[Command], ...] = ()
    #: Topics it may produce to through its context (named without the deployment's
    #: prefix; its worker creates them).
    produces: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.context}.{self.name}"


def declare(
    context: str,
    name: str,
    fn: Callable[..., Any],
    on: Iterable[type[Event]],
    retries: int,
    backoff: timedelta,
    sends: Iterable[type[Command]],
    produces: Iterable[str] = (),
) -> EventHandler:
    """Check a handler's declaration (see :meth:`BoundedContext.handler`)."""
    if not _NAME.fullmatch(name):
        raise ConfigurationError(f"handler name {name!r} must be snake_case")
    events = tuple(on)
    if not events or not all(isinstance(e, type) and issubclass(e, Event) for e in events):
        raise ConfigurationError(f"handler {name!r}: on= must list the Event types it takes")
    commands = tuple(sends)
    if not all(isinstance(c, type) and issubclass(c, Command) for c in commands):
        raise ConfigurationError(f"handler {name!r}: sends= must list Command types")
    if retries < 0 or backoff < timedelta(0):
        raise ConfigurationError(f"handler {name!r}: retries and backoff must not be negative")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != 2:
        raise ConfigurationError(
            f"handler {fn.__qualname__} must take (event, context), got {len(params)} parameters"
        )
    topics = tuple(produces)
    if not all(isinstance(t, str) and _TOPIC.fullmatch(t) for t in topics):
        raise ConfigurationError(f"handler {name!r}: produces= must list topic names")
    return EventHandler(context, name, events, fn, retries, backoff, commands, topics)
