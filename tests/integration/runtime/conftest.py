"""Fixtures for worker tests: a fresh topic prefix, a command producer, worker processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from topologies.retail.domain import retail, stock

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain.naming import AggregateTopics, aggregate_topics
from streamfold.embedded.ports import free_ports
from streamfold.runtime.process import WorkerProcess
from streamfold.testing.invariants import Report, check_aggregate
from streamfold.transport.commands import CommandProducer
from streamfold.transport.settings import KafkaSettings

TOPOLOGY = Path(__file__).resolve().parents[3] / "topologies" / "retail" / "topology.yaml"


@dataclass
class RetailRun:
    """One test's retail deployment: its prefix, producer, codec and workers."""

    settings: KafkaSettings
    registry_url: str
    prefix: str
    codec: AvroCodec
    producer: CommandProducer
    directory: Path
    workers: list[WorkerProcess]

    @property
    def stock_topics(self) -> AggregateTopics:
        return aggregate_topics("retail", "store_stock", self.prefix)

    def worker(self, instance: str = "w1", **env: str) -> WorkerProcess:
        """Start a worker instance (its own state dir and health port) and wait until ready."""
        (port,) = free_ports(1)
        process = WorkerProcess(
            TOPOLOGY,
            bootstrap_servers=self.settings.bootstrap_servers,
            registry_url=self.registry_url,
            instance_id=instance,
            state_dir=self.directory / f"state-{instance}",
            health_port=port,
            log_file=self.directory / f"worker-{instance}.log",
            extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": self.prefix, **env},
        )
        process.start(timeout=120)
        self.workers.append(process)
        return process

    def wait_until_processed(
        self, sent: set[str], timeout: float = 120.0, *, workers_must_live: bool = True
    ) -> None:
        """Wait until the invariants hold for everything sent; fail early if a worker died."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.check_stock(sent)
            if not report.problems:
                return
            dead = [w.name for w in self.workers if workers_must_live and not w.running()]
            if dead or time.monotonic() > deadline:
                raise AssertionError(f"dead workers: {dead}; {report.problems[:10]}")
            time.sleep(1.0)

    def check_stock(self, sent: set[str] | None) -> Report:
        return check_aggregate(
            self.settings, stock, self.stock_topics, retail.namespace, self.codec, sent
        )


@pytest.fixture
def retail_run(
    kafka_settings: KafkaSettings, schema_registry: Any, tmp_path: Path
) -> Iterator[RetailRun]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(schema_registry.url))
    producer = CommandProducer(kafka_settings, codec, retail, topic_prefix=prefix)
    run = RetailRun(kafka_settings, schema_registry.url, prefix, codec, producer, tmp_path, [])
    yield run
    for worker in run.workers:
        worker.stop()
    producer.close()


WaitFor = Callable[[Callable[[], bool], float], None]
