"""Sink connector specs: which context's topics go to which ClickHouse target.

A spec is a YAML file (``connectors/<context>/sink.yaml``)::

    name: retail                                  # the consumer group is streamfold.sink.<name>
    context: topologies.retail.domain:retail      # module:attribute of the BoundedContext
    aggregates: [supplier, item, store_stock]     # default: every aggregate of the context
    target: chdb:.streamfold/clickhouse           # chdb:///abs/path, or http(s)://host:8123
    database: retail
    username: default                             # server targets; the password comes from
                                                  # STREAMFOLD_SINK_PASSWORD, never the file
    batch_rows: 20000                             # rows of one source partition per insert
    batch_interval_ms: 200                        # longest a state or result record waits
    log_interval_ms: 1000                         # longest an event or command record waits

For each aggregate the sink projects its events topic (``<ctx>_<agg>_events``), its state
topic (``<ctx>_<agg>_state_last`` and ``<ctx>_<agg>_state``), its results topic
(``<ctx>_command_results``) and its commands topic (``<ctx>_command_log``); the audit view
``<ctx>_commands`` joins the last two (see :mod:`streamfold.sink.ddl`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext, import_context
from streamfold.errors import ConfigurationError
from streamfold.sink.target import ClickHouseTarget
from streamfold.sink.types import is_identifier

__all__ = ["ConnectorSpec", "load_connector"]


class ConnectorSpec(BaseModel):
    """One sink connector (see the module docstring for the file format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    context: str
    aggregates: list[str] | None = None
    target: str = "chdb:.streamfold/clickhouse"
    database: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: Prepended to every topic and the consumer group (as the worker's topic_prefix).
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    batch_rows: int = Field(default=20_000, ge=1)
    #: Longest a record of a topic PROJECTED acks wait for (state, results) waits to be
    #: inserted.
    batch_interval_ms: int = Field(default=200, ge=1)
    #: Longest a record of the append-only logs (events, commands) waits to be inserted:
    #: longer, so that most flushes on the acks' path insert fewer tables.
    log_interval_ms: int = Field(default=1000, ge=1)
    #: Send a PROJECTED ack per command after its rows are durable.
    acks: bool = True
    #: How soon the group gives a sink that died its partitions' successor: librdkafka's
    #: default (45 s) held a SIGKILLed sink's partitions, and every PROJECTED wait on them,
    #: that long. A broker allows no less than its ``group.min.session.timeout.ms`` (6 s by
    #: default).
    session_timeout_ms: int = Field(default=6_000, ge=1000)
    #: Static membership (``group.instance.id``): a sink restarted with the same id takes
    #: its partitions back at once, without a rebalance. Unique per running sink of a
    #: connector; the chart gives each pod its name (a restarted container keeps it).
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if not value.startswith(("chdb:", "http://", "https://")):
            raise ValueError(
                "target must be chdb:///path, chdb://memory, http://... or https://..."
            )
        return value

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not is_identifier(value):
            raise ValueError(f"database must be an identifier, not {value!r}")
        return value

    @property
    def group_id(self) -> str:
        return f"{self.topic_prefix}streamfold.sink.{self.name}"

    def membership_config(self) -> dict[str, Any]:
        """The consumer's group membership settings: the session, its heartbeat and, with
        an ``instance_id``, static membership."""
        found: dict[str, Any] = {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 4),
        }
        if self.instance_id is not None:
            found["group.instance.id"] = self.instance_id
        return found

    def database_name(self, context: BoundedContext) -> str:
        return self.database or context.name

    def load_context(self) -> BoundedContext:
        """Import the bounded context the spec names."""
        return import_context(self.context)

    def open_target(self, context: BoundedContext) -> ClickHouseTarget:
        """The ClickHouse target of this connector (not connected until first used)."""
        password = self.password.get_secret_value() if self.password else None
        database = self.database_name(context)
        return ClickHouseTarget(self.target, database, self.username, password)

    def select(self, context: BoundedContext) -> list[Aggregate[Any]]:
        if self.aggregates is None:
            return list(context.aggregates)
        return [context.get(name) for name in self.aggregates]


def load_connector(
    reference: str | Path, root: Path = Path("connectors"), **overrides: Any
) -> ConnectorSpec:
    """Load ``sink.yaml`` (a file, its directory, or a context name under ``root``).

    ``overrides`` (e.g. ``password`` from the environment, ``target`` from a flag) win over
    the file. Errors name the file and the field.
    """
    path = Path(reference)
    if not path.exists():
        path = root / str(reference)
    if path.is_dir():
        path = path / "sink.yaml"
    if not path.is_file():
        raise ConfigurationError(f"no connector spec at {reference!r} (looked for {path})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: a connector spec is a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ConnectorSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{path}: invalid connector spec: {problems}") from exc
