"""A whole bounded context in one process: aggregates, sagas and middleware, no broker.

::

    app = InProcess(retail, at=datetime(2026, 3, 1, tzinfo=UTC))
    app.send(PlacePurchase(...))                  # runs until nothing more follows
    app.send(RecordPayment(purchase_id="p-1", succeeded=False))
    app.advance(timedelta(hours=2))              # fires the timers due meanwhile
    assert app.state(purchases, "p-1").status == "cancelled"

Each command goes through :meth:`~streamfold.domain.aggregate.Aggregate.handle` (so the
context's middleware runs), each event to the sagas that react to it (by ``correlate``),
each saga input through :meth:`~streamfold.domain.saga.Saga.handle`, each command a saga
sends to its aggregate with its deterministic id, and each of their results back to the
saga, exactly as the worker routes them; a command id seen before gets its first result
again. Stores are dicts and the clock is fake: timers fire only in :meth:`InProcess.advance`,
in due order, each at its due time. What the Kafka path adds (encoding, partitions,
transactions) is not here; the decisions are the same.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streamfold.domain.aggregate import Aggregate, Snapshot
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command, Event, Metadata, State
from streamfold.domain.saga import (
    CommandOutcome,
    OutcomeKind,
    Saga,
    SagaInput,
    SagaMetadata,
    TimerFired,
    is_cancelled,
)
from streamfold.errors import Rejected

__all__ = ["InProcess", "Result"]


@dataclass(frozen=True, slots=True)
class Result:
    """A command's result, as the worker would answer it."""

    command_id: str
    command: Command
    outcome: OutcomeKind
    events: tuple[Event, ...] = ()
    code: str | None = None
    message: str | None = None
    #: The saga that sent it (``context.saga``, its id), if one did.
    sent_by: tuple[str, str] | None = None


@dataclass(slots=True)
class _Instance:
    state: Any
    timers: dict[str, datetime] = field(default_factory=dict)
    tenant: str | None = None


class InProcess:
    """Runs a bounded context's aggregates and sagas on in-memory stores and a fake clock."""

    def __init__(self, context: BoundedContext, *, at: datetime | None = None) -> None:
        self.context = context
        self.now = at or datetime(2026, 1, 1, tzinfo=UTC)
        self.results: list[Result] = []
        self.events: list[tuple[str, str, Event]] = []  # (aggregate, id, event)
        self._aggregates: dict[tuple[str, str], Snapshot[Any]] = {}
        self._tenants: dict[tuple[str, str], str | None] = {}
        self._seen: dict[str, Result] = {}
        self._sagas: dict[tuple[str, str], _Instance] = {}
        self._queue: deque[tuple[Command, Metadata, tuple[str, str] | None]] = deque()
        self._inputs = 0

    # ------------------------------------------------------------------ driving

    def send(self, command: Command, metadata: Metadata | None = None) -> Result:
        """Process ``command`` and everything it causes; return its own result."""
        meta = metadata or Metadata(issued_at=self.now)
        self._queue.append((command, meta, None))
        first = len(self.results)
        self._drain()
        return self.results[first]

    def advance(self, delta: timedelta) -> None:
        """Move the clock by ``delta``, firing each timer due by then at its due time."""
        until = self.now + delta
        while True:
            due = [
                (when, name, key)
                for key, instance in self._sagas.items()
                for name, when in instance.timers.items()
                if when <= until
            ]
            if not due:
                break
            when, name, (saga_name, saga_id) = min(due)
            self.now = when
            instance = self._sagas[(saga_name, saga_id)]
            del instance.timers[name]
            saga = self.context.get_saga(saga_name)
            self._saga_input(saga, saga_id, TimerFired(name, when), f"timer/{name}/{when}")
            self._drain()
        self.now = until

    # ------------------------------------------------------------------ reading

    def state(self, aggregate: Aggregate[Any] | str, aggregate_id: str) -> State | None:
        name = aggregate if isinstance(aggregate, str) else aggregate.name
        snapshot = self._aggregates.get((name, aggregate_id))
        return snapshot.state if snapshot is not None else None

    def saga_state(self, saga: Saga[Any] | str, saga_id: str) -> State | None:
        name = saga if isinstance(saga, str) else saga.name
        instance = self._sagas.get((name, saga_id))
        return instance.state if instance is not None else None

    def timers(self, saga: Saga[Any] | str, saga_id: str) -> dict[str, datetime]:
        name = saga if isinstance(saga, str) else saga.name
        instance = self._sagas.get((name, saga_id))
        return dict(instance.timers) if instance is not None else {}

    def sent(self, command_type: type[Command] | None = None) -> list[Command]:
        """The commands sagas sent (of ``command_type``), in the order they ran."""
        return [
            r.command
            for r in self.results
            if r.sent_by is not None and (command_type is None or type(r.command) is command_type)
        ]

    # ------------------------------------------------------------------ the loop

    def _drain(self) -> None:
        while self._queue:
            command, meta, sent_by = self._queue.popleft()
            result = self._decide(command, meta, sent_by)
            self.results.append(result)
            if sent_by is not None:
                saga_name, saga_id = sent_by
                outcome = CommandOutcome(
                    command_id=result.command_id,
                    command_type=type(command).__name__,
                    aggregate_id=None,
                    outcome=result.outcome,
                    code=result.code,
                    message=result.message,
                )
                saga = self.context.get_saga(saga_name.rpartition(".")[2])
                self._saga_input(saga, saga_id, outcome, f"result/{result.command_id}")

    def _decide(self, command: Command, meta: Metadata, sent_by: tuple[str, str] | None) -> Result:
        command_id = str(meta.command_id)
        first = self._seen.get(command_id)
        if first is not None:
            return first
        aggregate = self.context.aggregate_for(type(command))
        aggregate_id = aggregate.aggregate_id(command)
        key = (aggregate.name, aggregate_id)
        snapshot = self._aggregates.get(key, Snapshot())
        if snapshot.version and self._tenants.get(key) != meta.tenant:
            result = Result(command_id, command, OutcomeKind.REJECTED, code="tenant_mismatch")
            self._seen[command_id] = result
            return result
        try:
            decision = aggregate.handle(
                snapshot.state, snapshot.version, command, meta, deleted=snapshot.deleted
            )
        except Rejected as rejection:
            result = Result(
                command_id,
                command,
                OutcomeKind.REJECTED,
                (),
                rejection.code,
                rejection.message,
                sent_by,
            )
            self._seen[command_id] = result
            return result
        self._aggregates[key] = Snapshot(decision.state, decision.version, decision.deleted)
        self._tenants.setdefault(key, meta.tenant)
        result = Result(command_id, command, OutcomeKind.ACCEPTED, decision.events, sent_by=sent_by)
        self._seen[command_id] = result
        for event, version in zip(decision.events, decision.event_versions, strict=True):
            self.events.append((aggregate.name, aggregate_id, event))
            for saga in self.context.sagas:
                if type(event) in saga.events:
                    input_id = f"{aggregate.name}/{aggregate_id}/{version}"
                    self._saga_input(
                        saga, saga.correlate(event), event, input_id, meta, aggregate_id, version
                    )
        return result

    def _saga_input(
        self,
        saga: Saga[Any],
        saga_id: str,
        item: SagaInput,
        input_id: str,
        cause: Metadata | None = None,
        aggregate_id: str | None = None,
        version: int | None = None,
    ) -> None:
        key = (saga.name, saga_id)
        instance = self._sagas.get(key)
        meta = SagaMetadata(
            saga_id=saga_id,
            input_id=input_id,
            occurred_at=item.due if isinstance(item, TimerFired) else self.now,
            tenant=instance.tenant if instance is not None else (cause.tenant if cause else None),
            principal=cause.principal if cause else None,
            causation_id=str(cause.command_id) if cause else None,
            aggregate_id=aggregate_id,
            version=version,
        )
        decided = saga.handle(instance.state if instance else None, item, meta)
        if decided is None:
            return
        if instance is None:
            instance = self._sagas[key] = _Instance(None, tenant=meta.tenant)
        for name, due in decided.timers.items():
            if is_cancelled(due):
                instance.timers.pop(name, None)
            else:
                instance.timers[name] = due
        instance.state = decided.state
        if decided.ended:
            del self._sagas[key]
        for command_id, command in decided.commands:
            command_meta = Metadata(
                command_id=uuid.UUID(str(command_id)),
                tenant=meta.tenant,
                principal=f"saga:{saga.full_name}",
                issued_at=meta.occurred_at,
            )
            self._queue.append((command, command_meta, (saga.full_name, saga_id)))
