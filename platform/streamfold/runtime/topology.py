"""Topology files: which aggregates and sagas one worker deployment runs, and how.

A topology is a YAML file, by convention ``topologies/<name>/topology.yaml``::

    name: retail                                 # the consumer group is streamfold.retail
    context: topologies.retail.domain:retail     # module:attribute of the BoundedContext
    aggregates: [supplier, item, store_stock]    # default: every aggregate of the context
    sagas: [replenishment, purchase_flow]        # default: every saga, if aggregates is
                                                 # not given either; else none
    handlers: [notify_customer]                  # the same rule: each its own group
    topics:
      partitions: 6                              # of every topic the workers create
      replication_factor: 3                      # default: 3, or fewer brokers if fewer
    worker:                                      # any WorkerSettings field; env wins
      commit_interval_ms: 100

``streamfold worker <topology>`` accepts the file's path, its directory, or the topology
name under ``topologies/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext, import_context
from streamfold.domain.handlers import EventHandler
from streamfold.domain.saga import Saga
from streamfold.errors import ConfigurationError

__all__ = ["TopicSettings", "TopologySpec", "load_topology"]

TOPOLOGY_FILE = "topology.yaml"


class TopicSettings(BaseModel):
    """How the workers create their topics when missing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int = Field(default=6, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)


class TopologySpec(BaseModel):
    """A parsed topology file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    context: str
    aggregates: list[str] | None = None
    sagas: list[str] | None = None
    handlers: list[str] | None = None
    topics: TopicSettings = TopicSettings()
    worker: dict[str, Any] = {}
    source: Path | None = None

    @property
    def group_id(self) -> str:
        return f"streamfold.{self.name}"

    def load_context(self) -> BoundedContext:
        """Import the bounded context the topology names."""
        return import_context(self.context)

    def select(self, context: BoundedContext) -> list[Aggregate[Any]]:
        """The aggregates this topology runs."""
        if self.aggregates is None:
            return list(context.aggregates)
        return [context.get(name) for name in self.aggregates]

    def select_sagas(self, context: BoundedContext) -> list[Saga[Any]]:
        """The sagas this topology runs: those it names; when it names neither aggregates
        nor sagas, every saga of the context (a topology that picks its aggregates runs
        only the sagas it names, so two deployments never run one saga twice)."""
        if self.sagas is None:
            return list(context.sagas) if self.aggregates is None else []
        return [context.get_saga(name) for name in self.sagas]

    def select_handlers(self, context: BoundedContext) -> list[EventHandler]:
        """The event handlers this topology runs (the same rule as :meth:`select_sagas`)."""
        if self.handlers is None:
            return list(context.handlers) if self.aggregates is None else []
        return [context.get_handler(name) for name in self.handlers]

    def handler_group_id(self, handler: EventHandler) -> str:
        """The consumer group of one event handler: each has its own."""
        return f"{self.group_id}.handler.{handler.name}"


def load_topology(reference: str | Path, root: Path = Path("topologies")) -> TopologySpec:
    """Load a topology from a file, a directory holding ``topology.yaml``, or a name."""
    path = Path(reference)
    if path.is_dir():
        path = path / TOPOLOGY_FILE
    elif not path.exists() and (root / str(reference) / TOPOLOGY_FILE).exists():
        path = root / str(reference) / TOPOLOGY_FILE
    if not path.is_file():
        raise ConfigurationError(f"no topology {reference!r} (looked for {path})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: a topology is a mapping, not {type(data).__name__}")
    try:
        return TopologySpec.model_validate({**data, "source": path})
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
