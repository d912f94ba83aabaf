"""Helm values for a topology: its worker groups, partitions and sinks.

``streamfold deploy render <topology>`` writes these for ``helm/streamfold``; a platform
engineer reviews them, adds what the cluster needs (Kafka credentials, resources), then runs
``helm install``. What the values hold:

- ``topology``: the name, the BoundedContext, the partitions and replication factor of the
  topics the workers create, and the ``topic_prefix`` of the file's ``worker:`` section;
- ``workers.groups``: one StatefulSet each, running some of the aggregates, sagas and event
  handlers the topology runs. A topology file runs its aggregates and sagas in one consumer
  group (and each handler in one of its own); groups split them over several (the hot
  aggregate apart, say, or the handlers away from the state). Each group names its
  ``aggregates``, ``sagas`` and ``handlers`` explicitly (``[]`` for none), and gets a topology
  file of its own from the chart, named ``<topology>.<group>`` (so its consumer group is
  ``streamfold.<topology>.<group>``, and a handler's ``streamfold.<topology>.<group>.handler.
  <name>``); a single group keeps the topology's own name, so it continues ``streamfold
  worker``'s groups. Keep an aggregate, saga or handler in its group: in another it would
  start over in a new consumer group (an aggregate or saga from the beginning of its topic);
- ``workers.config``: the file's ``worker:`` settings, each one ``STREAMFOLD_WORKER_*``
  variable, except the ones the chart sets per pod (:data:`CHART_OWNED_SETTINGS`);
- ``sinks``: the connector specs for the topology's context, without their target (the
  chart's ``clickhouse.url``) and password (``STREAMFOLD_SINK_PASSWORD`` from a Secret);
- ``gateway``: whether the command gateway runs, and the named queries of its connector
  directory (``queries/<name>.sql`` of the first sink's directory, which the chart mounts
  next to that sink's spec). Its ``config`` keys are ``STREAMFOLD_GATEWAY_*`` variables,
  except the ones the chart sets (:data:`GATEWAY_CHART_OWNED_SETTINGS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamfold.errors import ConfigurationError
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import TopologySpec
from streamfold.sink.spec import ConnectorSpec

__all__ = [
    "CHART_OWNED_SETTINGS",
    "DEFAULT_GROUP",
    "GATEWAY_CHART_OWNED_SETTINGS",
    "WorkerGroup",
    "chart_owned_settings",
    "connector_directory",
    "parse_group",
    "read_queries",
    "render_values",
    "values_yaml",
]

#: The name of the one group of a topology rendered without ``--group``.
DEFAULT_GROUP = "main"
#: Replicas per group when none are asked for (at most the partitions: more would idle).
DEFAULT_REPLICAS = 3
#: Worker settings the chart sets per pod: the pod name as instance id, the volume as state
#: directory, its health server (0.0.0.0, its port), static membership; the topic prefix is
#: ``topology.topicPrefix``.
CHART_OWNED_SETTINGS = frozenset(
    {"instance_id", "state_dir", "health_host", "health_port", "static_membership", "topic_prefix"}
)
#: Gateway settings the chart sets itself: where it listens (0.0.0.0, gateway.containerPorts),
#: the mounted connector directory, the topic prefix (topology.topicPrefix), the sinks'
#: ClickHouse (clickhouse.url, the connector's username, the password from a Secret), and the
#: auth mode with its secrets (gateway.auth: files and a variable from an existing Secret; the
#: inline api_keys is never set). Every other field is a ``gateway.config`` key.
GATEWAY_CHART_OWNED_SETTINGS = frozenset(
    {
        "host",
        "port",
        "connectors_dir",
        "topic_prefix",
        "clickhouse_target",
        "clickhouse_username",
        "clickhouse_password",
        "auth",
        "api_keys",
        "api_keys_file",
        "jwt_secret",
        "jwt_public_key_file",
    }
)
#: Connector spec fields the chart sets itself: ``--target``, ``--topic-prefix`` and the
#: password from a Secret.
_SINK_FIELDS_SET_BY_CHART = frozenset({"target", "password", "topic_prefix"})
_GROUP = re.compile(r"^(?P<name>[^=]+)=(?P<members>.+)$")
#: What a group runs, as ``--group`` writes each kind (a plain name is an aggregate).
_KINDS = ("aggregate", "saga", "handler")
_GROUP_FORM = "name=aggregate[,saga:name,handler:name...], e.g. stock=store_stock"


class WorkerGroup(BaseModel):
    """Some of a topology's aggregates, sagas and event handlers, run by one StatefulSet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=20)
    aggregates: tuple[str, ...] = ()
    sagas: tuple[str, ...] = ()
    handlers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _runs_something_once(self) -> WorkerGroup:
        if not (self.aggregates or self.sagas or self.handlers):
            raise ValueError("it runs no aggregate, saga or handler")
        for kind, names in zip(_KINDS, self.members(), strict=True):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"it names {kind} {twice[0]!r} twice")
        return self

    def members(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """Its aggregates, sagas and handlers, in the order of ``_KINDS``."""
        return self.aggregates, self.sagas, self.handlers


def parse_group(text: str) -> WorkerGroup:
    """``name=aggregate[,aggregate...][,saga:name...][,handler:name...]``, as ``--group``
    takes it: a plain name is an aggregate (``aggregate:name`` says so too)."""
    match = _GROUP.match(text.strip())
    if match is None:
        raise ConfigurationError(f"--group {text!r}: write {_GROUP_FORM}")
    members: dict[str, list[str]] = {kind: [] for kind in _KINDS}
    for item in (i.strip() for i in match["members"].split(",")):
        if not item:
            continue
        kind, colon, name = item.partition(":")
        if not colon:
            kind, name = "aggregate", item
        kind, name = kind.strip(), name.strip()
        if kind not in members:
            raise ConfigurationError(
                f"--group {text!r}: {item!r} is no aggregate, saga:name or handler:name"
                f" ({kind!r} is not one of {', '.join(_KINDS)})"
            )
        if not name:
            raise ConfigurationError(f"--group {text!r}: {item!r} names no {kind}")
        members[kind].append(name)
    if not any(members.values()):
        raise ConfigurationError(f"--group {text!r}: write {_GROUP_FORM}")
    try:
        return WorkerGroup(
            name=match["name"].strip(),
            aggregates=tuple(members["aggregate"]),
            sagas=tuple(members["saga"]),
            handlers=tuple(members["handler"]),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'group'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"--group {text!r}: {problems}") from exc


def chart_owned_settings(topology: TopologySpec) -> list[str]:
    """The file's worker settings the chart sets per pod instead (topic_prefix excepted: it
    becomes ``topology.topicPrefix``)."""
    return sorted(set(topology.worker) & (CHART_OWNED_SETTINGS - {"topic_prefix"}))


def _written(kind: str, name: str) -> str:
    """``name`` as ``--group`` writes it: an aggregate plain, else ``kind:name``."""
    return name if kind == "aggregate" else f"{kind}:{name}"


def _check_groups(
    topology: TopologySpec,
    runs: Mapping[str, Sequence[str]],
    groups: Sequence[WorkerGroup],
) -> None:
    """Each aggregate, saga and handler of ``runs`` (by kind) in exactly one group, and
    nothing else in any."""
    names = [g.name for g in groups]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigurationError(f"worker group {twice[0]!r} is named twice")
    placed: dict[tuple[str, str], str] = {}
    for group in groups:
        for kind, members in zip(_KINDS, group.members(), strict=True):
            for name in members:
                if name not in runs[kind]:
                    raise ConfigurationError(
                        f"worker group {group.name!r}: topology {topology.name!r} runs no"
                        f" {kind} {name!r} ({_what_it_runs(kind, runs[kind])})"
                        + _other_kind_hint(kind, name, runs)
                    )
                if (kind, name) in placed:
                    raise ConfigurationError(
                        f"{kind} {name!r} is in worker groups {placed[kind, name]!r} and"
                        f" {group.name!r}: put it in one"
                    )
                placed[kind, name] = group.name
    missing = [
        _written(kind, name) for kind in _KINDS for name in runs[kind] if (kind, name) not in placed
    ]
    if missing:
        raise ConfigurationError(f"no worker group runs {', '.join(missing)}: add it to a --group")


def _what_it_runs(kind: str, names: Sequence[str]) -> str:
    return f"it runs {', '.join(names)}" if names else f"it runs no {kind}"


def _other_kind_hint(kind: str, name: str, runs: Mapping[str, Sequence[str]]) -> str:
    """``; 'x' is a saga: write saga:x`` when the name is one of another kind."""
    for other in _KINDS:
        if other != kind and name in runs[other]:
            article = "an" if other == "aggregate" else "a"
            return f"; {name!r} is {article} {other}: write {_written(other, name)}"
    return ""


def _worker_config(topology: TopologySpec) -> dict[str, Any]:
    known = set(WorkerSettings.model_fields)
    unknown = sorted(set(topology.worker) - known)
    if unknown:
        raise ConfigurationError(
            f"topology {topology.name!r}: worker has no setting {unknown[0]!r}"
            f" (settings: {', '.join(sorted(known))})"
        )
    return {k: v for k, v in topology.worker.items() if k not in CHART_OWNED_SETTINGS}


def _sink_values(topology: TopologySpec, spec: ConnectorSpec) -> dict[str, Any]:
    if spec.context != topology.context:
        raise ConfigurationError(
            f"sink {spec.name!r} projects {spec.context}, not the topology's {topology.context}"
        )
    connector = spec.model_dump(mode="json", exclude_unset=True)
    for name in _SINK_FIELDS_SET_BY_CHART:
        connector.pop(name, None)
    return {"name": spec.name.replace("_", "-"), "connector": connector}


def connector_directory(reference: str | Path, root: Path = Path("connectors")) -> Path:
    """The directory of a connector spec, found as :func:`streamfold.sink.spec.load_connector`
    finds the spec (a file, its directory, or a context name under ``root``)."""
    path = Path(reference)
    if not path.exists():
        path = root / str(reference)
    return path if path.is_dir() else path.parent


def read_queries(directory: Path) -> dict[str, str]:
    """The named queries of a connector directory: ``queries/<name>.sql`` by name."""
    return {
        path.stem: path.read_text(encoding="utf-8")
        for path in sorted((directory / "queries").glob("*.sql"))
    }


def _image_values(reference: str) -> dict[str, str]:
    """``[registry/]repository[:tag][@digest]`` as the chart's image values."""
    rest, _, digest = reference.partition("@")
    name, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        name, tag = rest, ""
    first, slash, remainder = name.partition("/")
    is_registry = slash and ("." in first or ":" in first or first == "localhost")
    image = {
        "registry": first if is_registry else "",
        "repository": remainder if is_registry else name,
    }
    if tag:
        image["tag"] = tag
    if digest:
        image["digest"] = digest
    return image


def render_values(
    topology: TopologySpec,
    aggregates: Sequence[str],
    *,
    sagas: Sequence[str] = (),
    handlers: Sequence[str] = (),
    groups: Sequence[WorkerGroup] = (),
    sinks: Sequence[ConnectorSpec] = (),
    replicas: int | None = None,
    image: str | None = None,
    bootstrap_servers: str | None = None,
    registry_url: str | None = None,
    clickhouse_url: str | None = None,
    gateway: bool = True,
    queries: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The chart's values for ``topology``, which runs ``aggregates``, ``sagas`` and event
    ``handlers`` (as :meth:`TopologySpec.select`, :meth:`~TopologySpec.select_sagas` and
    :meth:`~TopologySpec.select_handlers` find them).

    Without ``groups`` one group (:data:`DEFAULT_GROUP`) runs them all under the topology's
    own name; ``groups`` must place each of them in exactly one group. Every group lists its
    aggregates, sagas and handlers, ``[]`` for none: the chart writes them into its topology
    file as they are, so no group falls back to the context's defaults.

    ``replicas`` (default: :data:`DEFAULT_REPLICAS`, at most the partitions) is each group's
    replica count; more than the partitions is refused, since the extra pods would have no
    partition to work on. ``registry_url`` turns the chart's registry off.
    ``gateway`` runs the command gateway, with ``queries`` (name to SQL) as its named
    queries; without sinks it has no state to read, and queries are refused.
    """
    partitions = topology.topics.partitions
    if replicas is None:
        replicas = min(DEFAULT_REPLICAS, partitions)
    if not 0 < replicas <= partitions:
        raise ConfigurationError(
            f"--replicas {replicas}: give 1 to {partitions} (the topics' partitions;"
            f" more workers would have no partition to work on)"
        )
    if groups:
        runs = {"aggregate": aggregates, "saga": sagas, "handler": handlers}
        _check_groups(topology, runs, groups)
        group_values = [
            {
                "name": g.name,
                "aggregates": list(g.aggregates),
                "sagas": list(g.sagas),
                "handlers": list(g.handlers),
                "replicaCount": replicas,
            }
            for g in groups
        ]
    else:
        group_values = [
            {
                "name": DEFAULT_GROUP,
                "topologyName": topology.name,
                "aggregates": list(aggregates),
                "sagas": list(sagas),
                "handlers": list(handlers),
                "replicaCount": replicas,
            }
        ]
    topic_prefix = topology.worker.get("topic_prefix", "")
    values: dict[str, Any] = {
        "topology": {
            "name": topology.name,
            "context": topology.context,
            "partitions": partitions,
            "replicationFactor": topology.topics.replication_factor,
            "topicPrefix": topic_prefix,
        },
    }
    if image is not None:
        values["image"] = _image_values(image)
    if bootstrap_servers is not None:
        values["kafka"] = {"bootstrapServers": bootstrap_servers}
    if registry_url is not None:
        values["registry"] = {"enabled": False}
        values["registryClient"] = {"url": registry_url}
    if clickhouse_url is not None:
        values["clickhouse"] = {"url": clickhouse_url}
    values["workers"] = {"config": _worker_config(topology), "groups": group_values}
    values["sinks"] = [_sink_values(topology, spec) for spec in sinks]
    values["gateway"] = _gateway_values(gateway, queries or {}, sinks)
    return values


def _gateway_values(
    enabled: bool, queries: Mapping[str, str], sinks: Sequence[ConnectorSpec]
) -> dict[str, Any]:
    if not enabled:
        return {"enabled": False}
    if queries and not sinks:
        raise ConfigurationError(
            f"named queries {', '.join(sorted(queries))} need a sink: the gateway reads them"
            " from the sink's ClickHouse"
        )
    return {"enabled": True, "queries": dict(queries)}


def values_yaml(values: dict[str, Any], topology: TopologySpec) -> str:
    """The values as a file, with a header saying where they come from and what to do next."""
    source = topology.source or topology.name
    header = (
        f"# Helm values for topology {topology.name!r} ({source}), written by"
        " `streamfold deploy render`.\n"
        "# Review them, add the cluster's settings (kafka.*, registryClient.*, clickhouse.*;\n"
        "# credentials through existingSecret), then:\n"
        f"#   helm install {topology.name.replace('_', '-').replace('.', '-')}"
        " helm/streamfold -f <this file>\n"
        "# Every value is described in helm/streamfold/values.yaml.\n"
    )
    return header + yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
