"""``streamfold gateway <topology>``: assemble the gateway and serve it; run it as a child.

:func:`assemble` builds the application from a topology (its context and aggregates) and
the connector directory of the context (``connectors/<ctx>``: the spec names the ClickHouse
target and database that state and queries read; ``queries/*.sql`` are the named queries).
Without a connector spec the gateway serves commands only. :class:`GatewayProcess` starts
``python -m streamfold gateway`` as a child and waits until it is ready; the dev stack, the
demo and the tests run that, the same process a user runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.evolution import RegistryClientSettings
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.embedded.children import ChildProcess
from streamfold.errors import ConfigurationError
from streamfold.gateway.app import build_app
from streamfold.gateway.auth import Authenticator
from streamfold.gateway.bus import CommandBus
from streamfold.gateway.commands import CommandLane
from streamfold.gateway.metrics import GatewayMetrics
from streamfold.gateway.reads import ClickHouseReader
from streamfold.gateway.settings import GatewaySettings
from streamfold.http.server import ServerTls
from streamfold.observability.logging import get_logger
from streamfold.observability.tracing import TracingSettings, configure_tracing
from streamfold.runtime.topology import TopologySpec
from streamfold.sink.named_queries import NamedQuery, load_named_queries
from streamfold.sink.spec import load_connector
from streamfold.transport.settings import KafkaSettings

__all__ = ["GatewayProcess", "assemble"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _ReadSide:
    reader: ClickHouseReader | None
    queries: list[NamedQuery]


def _read_side(settings: GatewaySettings, context_name: str, auth_on: bool) -> _ReadSide:
    directory = settings.connectors_dir or Path("connectors") / context_name
    spec_file = directory / "sink.yaml"
    if not spec_file.exists():
        log.warning("no connector spec: state and query routes are off", looked_for=str(spec_file))
        return _ReadSide(None, [])
    spec = load_connector(directory)
    database = spec.database or context_name
    target = settings.clickhouse_target or spec.target
    password = settings.clickhouse_password
    reader = ClickHouseReader(
        target,
        database,
        username=settings.clickhouse_username or spec.username,
        password=password.get_secret_value() if password is not None else None,
        max_rows=settings.query_max_rows,
        max_execution_s=settings.query_max_execution_s,
    )
    queries_dir = directory / "queries"
    queries = load_named_queries(queries_dir, database) if queries_dir.is_dir() else []
    if auth_on:
        unbound = [q.name for q in queries if not q.tenant_bound]
        if unbound:
            raise ConfigurationError(
                f"with auth on every query must filter by {{tenant:String}}; these do not: "
                f"{', '.join(unbound)}"
            )
    return _ReadSide(reader, queries)


def assemble(
    topology: TopologySpec,
    settings: GatewaySettings,
    kafka: KafkaSettings,
    registry: RegistryClientSettings,
    tracing: TracingSettings | None = None,
) -> CommandLane:
    """The gateway application of ``topology`` (Kafka and the registry are reached on start)."""
    context = topology.load_context()
    aggregates = topology.select(context)
    configure_tracing("streamfold-gateway", tracing or TracingSettings())
    authenticator = Authenticator(settings)
    codec = AvroCodec(ConfluentSchemaRegistry(SchemaRegistryClient(registry.client_config())))
    bus = CommandBus(context, [a.name for a in aggregates], settings, kafka, codec)
    reads = _read_side(settings, context.name, authenticator.enabled)
    return build_app(
        context,
        aggregates,
        settings,
        bus,
        reads.reader,
        reads.queries,
        authenticator,
        GatewayMetrics(),
    )


class GatewayProcess(ChildProcess):
    """``streamfold gateway`` as a child process; ready when ``/readyz`` answers 200."""

    def __init__(
        self,
        topology: str | Path,
        *,
        bootstrap_servers: str,
        registry_url: str,
        port: int,
        host: str = "127.0.0.1",
        connectors_dir: Path | None = None,
        clickhouse_target: str | None = None,
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
        tls: ServerTls | None = None,
        ca: Path | None = None,
    ) -> None:
        """``tls`` serves HTTPS; ``ca`` is the PEM CA that verifies it for readiness."""
        self.url = f"{'https' if tls is not None else 'http'}://{host}:{port}"
        env = {
            **os.environ,
            "STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMFOLD_REGISTRY_URL": registry_url,
            "STREAMFOLD_GATEWAY_HOST": host,
            "STREAMFOLD_GATEWAY_PORT": str(port),
            "STREAMFOLD_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        if connectors_dir is not None:
            env["STREAMFOLD_GATEWAY_CONNECTORS_DIR"] = str(connectors_dir)
        if clickhouse_target is not None:
            env["STREAMFOLD_GATEWAY_CLICKHOUSE_TARGET"] = clickhouse_target
        if tls is not None:
            env["STREAMFOLD_GATEWAY_TLS_CERTIFICATE"] = str(tls.certificate)
            env["STREAMFOLD_GATEWAY_TLS_KEY"] = str(tls.key)
        super().__init__(
            ["gateway", str(topology)],
            env=env,
            ready_url=f"{self.url}/readyz",
            log_file=log_file,
            name=f"the gateway at {self.url}",
            ready_ca=ca,
        )
