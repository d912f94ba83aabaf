"""The message vocabulary of a domain: commands, events, state, and their metadata.

A domain developer subclasses :class:`Command`, :class:`Event` and :class:`State`; each is a
frozen pydantic v2 model that forbids unknown fields, so a message is a value that a handler
cannot mutate by accident and a typo in a field name fails loudly.

Everything about a message that is not domain data (who sent it, when, under which request,
with which expected version) travels beside it as :class:`Metadata`, never inside the model:
the worker carries it in Kafka headers and hands it to a decide function that asks for it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "AggregateDeleted",
    "AggregateRecovered",
    "Command",
    "DeleteAggregate",
    "Event",
    "Message",
    "Metadata",
    "RecoverAggregate",
    "State",
]


class Message(BaseModel):
    """Base of every domain message: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Command(Message):
    """An intention addressed to one aggregate; named in the imperative (``RecordSale``)."""


class Event(Message):
    """A fact an aggregate decided; named in the past tense (``SaleRecorded``)."""


class State(Message):
    """The state of one aggregate, folded from its events."""


def _now() -> datetime:
    return datetime.now(UTC)


class Metadata(BaseModel):
    """What the platform knows about a command beyond its data.

    A decide function receives it when it declares a third parameter. ``expected_version``
    enables optimistic concurrency: the command is rejected with ``version_conflict`` unless the
    aggregate is at exactly that version (0 means "must not exist yet").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    request_id: str | None = None
    tenant: str | None = None
    principal: str | None = None
    issued_at: AwareDatetime = Field(default_factory=_now)
    expected_version: int | None = Field(default=None, ge=0)


# --- built-in soft delete ------------------------------------------------------------------
# An aggregate declared with ``soft_delete=True`` gets its own subclasses of these four
# (``DeleteItem``, ``ItemDeleted``, ``RecoverItem``, ``ItemRecovered`` for state ``Item``), so
# every record name stays unique and routable. See :mod:`streamfold.domain.aggregate`.


class DeleteAggregate(Command):
    """Mark an aggregate deleted; later commands are rejected with ``aggregate_deleted``."""

    aggregate_id: str
    reason: str | None = None


class AggregateDeleted(Event):
    """An aggregate was marked deleted; its state is kept."""

    aggregate_id: str
    reason: str | None = None


class RecoverAggregate(Command):
    """Undo a soft delete; the aggregate accepts commands again."""

    aggregate_id: str
    reason: str | None = None


class AggregateRecovered(Event):
    """A soft-deleted aggregate was recovered."""

    aggregate_id: str
    reason: str | None = None
