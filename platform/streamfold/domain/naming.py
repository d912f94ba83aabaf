"""Topic and subject names: the one module that owns naming.

Every topic of a bounded context derives from its name and the aggregate's name:

========================================  =============================================
``{context}.{aggregate}.commands``        commands addressed to the aggregate
``{context}.{aggregate}.events``          the events it decided
``{context}.{aggregate}.state``           state after each command, with its version
``{context}.{aggregate}.results``         one result per command (accepted / rejected)
``{context}.{aggregate}.changelog``       compacted changelog of the worker's store
``{context}.dlq``                         dead letters of the whole context
``{context}.projected``                   acknowledgements from sink connectors
``{context}.{saga}.inputs``               a saga's inputs, keyed (repartitioned) by saga id
``{context}.{saga}.changelog``            compacted changelog of a saga's store
``{context}.{handler}.dlq``               an event handler's dead letters and waiting events
``{context}.{handler}.parked``            compacted: an event handler's parked aggregates
========================================  =============================================

Schema registry subjects follow Confluent's TopicRecordNameStrategy:
``{topic}-{record full name}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamfold.errors import ConfigurationError

__all__ = [
    "AggregateTopics",
    "ContextTopics",
    "HandlerTopics",
    "SagaTopics",
    "aggregate_topics",
    "command_path",
    "context_topics",
    "handler_topics",
    "saga_topics",
    "snake_case",
    "subject_name",
    "validate_name",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid context or aggregate name (``snake_case``)."""
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{kind} name {name!r} must be snake_case: a lowercase letter, then [a-z0-9_]"
        )
    return name


@dataclass(frozen=True, slots=True)
class AggregateTopics:
    """The topics of one aggregate type."""

    commands: str
    events: str
    state: str
    results: str
    changelog: str

    def all(self) -> tuple[str, ...]:
        """Every topic, in a stable order."""
        return (self.commands, self.events, self.state, self.results, self.changelog)


@dataclass(frozen=True, slots=True)
class ContextTopics:
    """The topics shared by every aggregate of a bounded context."""

    dlq: str
    projected: str


def aggregate_topics(context: str, aggregate: str, prefix: str = "") -> AggregateTopics:
    """Name the topics of ``aggregate`` in ``context`` (``prefix``: a deployment's namespace,
    e.g. ``staging.``, prepended to every topic; empty by default)."""
    prefix += f"{validate_name('context', context)}.{validate_name('aggregate', aggregate)}"
    return AggregateTopics(
        commands=f"{prefix}.commands",
        events=f"{prefix}.events",
        state=f"{prefix}.state",
        results=f"{prefix}.results",
        changelog=f"{prefix}.changelog",
    )


@dataclass(frozen=True, slots=True)
class SagaTopics:
    """The topics of one saga type."""

    inputs: str
    changelog: str


def saga_topics(context: str, saga: str, prefix: str = "") -> SagaTopics:
    """Name the topics of ``saga`` in ``context`` (``prefix`` as for aggregate_topics)."""
    prefix += f"{validate_name('context', context)}.{validate_name('saga', saga)}"
    return SagaTopics(inputs=f"{prefix}.inputs", changelog=f"{prefix}.changelog")


@dataclass(frozen=True, slots=True)
class HandlerTopics:
    """The topics of one event handler."""

    dlq: str
    parked: str


def handler_topics(context: str, handler: str, prefix: str = "") -> HandlerTopics:
    """Name the topics of event handler ``handler`` of ``context``."""
    prefix += f"{validate_name('context', context)}.{validate_name('handler', handler)}"
    return HandlerTopics(dlq=f"{prefix}.dlq", parked=f"{prefix}.parked")


def context_topics(context: str, prefix: str = "") -> ContextTopics:
    """Name the topics shared by a whole context (``prefix`` as for aggregate_topics)."""
    validate_name("context", context)
    return ContextTopics(dlq=f"{prefix}{context}.dlq", projected=f"{prefix}{context}.projected")


def snake_case(name: str) -> str:
    """``RecordSale`` → ``record_sale``."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def command_path(context: str, aggregate: str, command: str) -> str:
    """The gateway's route of a command type: ``/retail/store_stock/record_sale`` for
    ``RecordSale``."""
    return f"/{context}/{aggregate}/{snake_case(command)}"


def subject_name(topic: str, record_full_name: str) -> str:
    """Registry subject of a record type on a topic (TopicRecordNameStrategy)."""
    return f"{topic}-{record_full_name}"
