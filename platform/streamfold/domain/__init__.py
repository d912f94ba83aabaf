"""The domain API: everything a domain developer writes against.

Messages (:class:`Command`, :class:`Event`, :class:`State`), their :class:`Metadata`, a
:class:`BoundedContext` that declares :class:`Aggregate` types, and the :class:`Decision` an
aggregate returns. Topic names live in :mod:`streamfold.domain.naming`.
"""

from __future__ import annotations

from streamfold.domain.aggregate import (
    Aggregate,
    Decision,
    HandlerContractError,
    Snapshot,
    SoftDelete,
)
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import (
    AggregateDeleted,
    AggregateRecovered,
    Command,
    DeleteAggregate,
    Event,
    Metadata,
    RecoverAggregate,
    State,
)
from streamfold.errors import Rejected

__all__ = [
    "Aggregate",
    "AggregateDeleted",
    "AggregateRecovered",
    "BoundedContext",
    "Command",
    "Decision",
    "DeleteAggregate",
    "Event",
    "HandlerContractError",
    "Metadata",
    "RecoverAggregate",
    "Rejected",
    "Snapshot",
    "SoftDelete",
    "State",
]
