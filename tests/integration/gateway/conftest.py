"""A retail stack for the gateway tests: worker, sink (chDB) and gateway(s) on one broker.

Each module gets its own topic prefix, so its topics, groups and tables are its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamfold.embedded.ports import free_ports
from streamfold.gateway.server import GatewayProcess
from streamfold.runtime.process import WorkerProcess
from streamfold.sink.process import SinkProcess
from streamfold.transport.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[3]
TOPOLOGY = ROOT / "topologies" / "retail" / "topology.yaml"
CONNECTOR = ROOT / "connectors" / "retail"


@dataclass
class RetailStack:
    """What a gateway test runs against."""

    settings: KafkaSettings
    registry_url: str
    prefix: str
    directory: Path
    target: str
    worker: WorkerProcess
    sink: SinkProcess
    gateways: list[GatewayProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateways[0].url

    def gateway(self, **env: str) -> GatewayProcess:
        """Start one more gateway replica (``env``: extra STREAMFOLD_GATEWAY_* settings)."""
        (port,) = free_ports(1)
        process = GatewayProcess(
            TOPOLOGY,
            bootstrap_servers=self.settings.bootstrap_servers,
            registry_url=self.registry_url,
            port=port,
            connectors_dir=CONNECTOR,
            clickhouse_target=self.target,
            log_file=self.directory / f"gateway-{port}.log",
            extra_env={"STREAMFOLD_GATEWAY_TOPIC_PREFIX": self.prefix, **env},
        )
        process.start(timeout=120)
        self.gateways.append(process)
        return process

    def client(self, gateway: GatewayProcess | None = None, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=(gateway or self.gateways[0]).url, timeout=60, **kwargs)


def start_stack(
    settings: KafkaSettings, registry_url: str, directory: Path, worker_env: dict[str, str]
) -> RetailStack:
    prefix = f"g{uuid.uuid4().hex[:8]}."
    worker_port, sink_port = free_ports(2)
    worker = WorkerProcess(
        TOPOLOGY,
        bootstrap_servers=settings.bootstrap_servers,
        registry_url=registry_url,
        instance_id="gw-1",
        state_dir=directory / "state",
        health_port=worker_port,
        log_file=directory / "worker.log",
        extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": prefix, **worker_env},
    )
    target = f"chdb:{directory / 'clickhouse'}"
    sink = SinkProcess(
        CONNECTOR,
        bootstrap_servers=settings.bootstrap_servers,
        registry_url=registry_url,
        health_port=sink_port,
        target=target,
        topic_prefix=prefix,
        log_file=directory / "sink.log",
    )
    worker.start(timeout=180)
    sink.start(timeout=180)
    return RetailStack(settings, registry_url, prefix, directory, target, worker, sink)


@pytest.fixture(scope="module")
def stack_factory(
    kafka_settings: KafkaSettings,
    schema_registry: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RetailStack]]:
    stacks: list[RetailStack] = []

    def start(worker_env: dict[str, str] | None = None, **gateway_env: str) -> RetailStack:
        stack = start_stack(
            kafka_settings, schema_registry.url, tmp_path_factory.mktemp("stack"), worker_env or {}
        )
        stacks.append(stack)
        stack.gateway(**gateway_env)
        return stack

    yield start
    for stack in stacks:
        for gateway in stack.gateways:
            gateway.stop()
        stack.sink.stop()
        stack.worker.stop()


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., RetailStack]) -> RetailStack:
    """One retail stack with one gateway, shared by a test module."""
    return stack_factory()
