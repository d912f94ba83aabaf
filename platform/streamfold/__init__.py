"""streamfold: a Kafka-native CQRS and event-sourcing platform.

A team writes its domain with the names exported here::

    from streamfold import BoundedContext, Command, Event, Metadata, Rejected, State

and tests it with :func:`streamfold.testing.given`. Everything else (the worker, the
gateway, the sink, the registry, the CLI) is run, not imported, by a domain. The names are
loaded on first use, so ``python -m streamfold`` and the processes it starts import only
what they run.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamfold.domain import (
        Aggregate,
        BoundedContext,
        Command,
        Event,
        Metadata,
        State,
    )
    from streamfold.errors import Rejected

__all__ = [
    "Aggregate",
    "BoundedContext",
    "Command",
    "Event",
    "Metadata",
    "Rejected",
    "State",
    "__version__",
]

_DOMAIN = frozenset(__all__) - {"__version__"}

try:
    __version__ = version("streamfold")
except PackageNotFoundError:  # a source tree put on sys.path, not installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in _DOMAIN:
        value = getattr(import_module("streamfold.domain"), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'streamfold' has no attribute {name!r}")
