"""The domain API: everything a domain developer writes against.

Messages (:class:`Command`, :class:`Event`, :class:`State`), their :class:`Metadata`, and a
:class:`BoundedContext` that declares :class:`Aggregate` types; a decider raises
:class:`Rejected`. The same names are exported by the top-level ``streamfold`` package, the
import to use. Topic names live in :mod:`streamfold.domain.naming`, sagas in
:mod:`streamfold.domain.saga`.

What the platform uses internally (the soft-delete machinery, snapshots, decisions, the
handler contract error) is no longer exported here: importing it from this package still
works, with a :class:`DeprecationWarning` naming the module it lives in.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command, Event, Metadata, State
from streamfold.errors import Rejected

__all__ = [
    "Aggregate",
    "BoundedContext",
    "Command",
    "Event",
    "Metadata",
    "Rejected",
    "State",
]

#: Names this package exported before, and the module each lives in.
_MOVED = {
    "AggregateDeleted": "streamfold.domain.messages",
    "AggregateRecovered": "streamfold.domain.messages",
    "DeleteAggregate": "streamfold.domain.messages",
    "RecoverAggregate": "streamfold.domain.messages",
    "Decision": "streamfold.domain.aggregate",
    "HandlerContractError": "streamfold.errors",
    "Snapshot": "streamfold.domain.aggregate",
    "SoftDelete": "streamfold.domain.aggregate",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'streamfold.domain' has no attribute {name!r}")
    warnings.warn(
        f"streamfold.domain.{name} is internal; import it from {module} if you must",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(import_module(module), name)
