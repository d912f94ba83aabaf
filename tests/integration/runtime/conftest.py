"""Fixtures for worker tests: a fresh topic prefix, a command producer, worker processes."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from topologies.retail.domain import retail, stock

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.naming import (
    AggregateTopics,
    aggregate_topics,
    context_topics,
    saga_topics,
)
from streamfold.embedded.ports import free_ports
from streamfold.runtime.process import WorkerProcess
from streamfold.testing.invariants import Report, check_aggregate
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import read_to_end
from streamfold.transport.settings import KafkaSettings

from .faulty import faulty
from .timed import timed

RETAIL = Path(__file__).resolve().parents[3] / "topologies" / "retail"
#: The write path alone (no sagas, no handlers): what the write-side tests run.
TOPOLOGY = RETAIL / "stock-only.yaml"
#: Every aggregate, saga and handler of retail.
FULL_TOPOLOGY = RETAIL / "topology.yaml"


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

    def worker(
        self,
        instance: str = "w1",
        *,
        topology: Path = TOPOLOGY,
        name: str | None = None,
        **env: str,
    ) -> WorkerProcess:
        """Start a worker instance (its own state dir and health port, both named after
        ``name``, the instance id unless given) and wait until ready."""
        (port,) = free_ports(1)
        name = name or instance
        process = WorkerProcess(
            topology,
            bootstrap_servers=self.settings.bootstrap_servers,
            registry_url=self.registry_url,
            instance_id=instance,
            state_dir=self.directory / f"state-{name}",
            health_port=port,
            log_file=self.directory / f"worker-{name}.log",
            extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": self.prefix, **env},
        )
        process.start(timeout=120)
        self.workers.append(process)
        return process

    def wait_until_processed(
        self,
        sent: set[str],
        timeout: float = 120.0,
        *,
        workers_must_live: bool = True,
        resent: set[str] | None = None,
    ) -> None:
        """Wait until the invariants hold for everything sent; fail early if a worker died."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.check_stock(sent, resent)
            if not report.problems:
                return
            dead = [w.name for w in self.workers if workers_must_live and not w.running()]
            if dead or time.monotonic() > deadline:
                raise AssertionError(f"dead workers: {dead}; {report.problems[:10]}")
            time.sleep(1.0)

    def check_stock(self, sent: set[str] | None, resent: set[str] | None = None) -> Report:
        return check_aggregate(
            self.settings, stock, self.stock_topics, retail.namespace, self.codec, sent, resent
        )

    def open_transactions(self, partitions: int = 6) -> int:
        """Partitions of the retail output topics with records of a transaction still open.

        Right after a worker is SIGKILLed, its open transaction stays open at the broker
        until the restarted instance fences it: its partitions' last stable offset is then
        below their high watermark.
        """
        names = [
            name
            for aggregate in retail.aggregates
            for name in aggregate_topics("retail", aggregate.name, self.prefix).all()
        ]
        for saga in retail.sagas:
            names.extend(astuple(saga_topics("retail", saga.name, self.prefix)))
        names.append(context_topics("retail", self.prefix).dlq)
        admin = AdminClient(self.settings.admin_config())
        existing = set(admin.list_topics(timeout=30).topics)  # the topology's, of these
        wanted = [TopicPartition(n, p) for n in names if n in existing for p in range(partitions)]

        def ends(isolation: IsolationLevel) -> dict[tuple[str, int], int]:
            futures = admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in wanted}, isolation_level=isolation
            )
            return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

        stable = ends(IsolationLevel.READ_COMMITTED)
        high = ends(IsolationLevel.READ_UNCOMMITTED)
        return sum(1 for key, offset in high.items() if stable[key] < offset)

    def wait_until_assigned(self, worker: WorkerProcess, timeout: float = 60.0) -> None:
        """Wait until ``worker`` holds partitions and has restored their stores."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = worker_metrics(worker)
            held = metrics.get("streamfold_worker_assigned_partitions", 0.0)
            if held > 0 and metrics.get("streamfold_worker_restoring_partitions", 0.0) == 0:
                return
            assert time.monotonic() < deadline, f"{worker.name} was assigned nothing"
            time.sleep(0.2)

    def wait_until_working(self, worker: WorkerProcess, timeout: float = 60.0) -> None:
        """Wait until ``worker`` holds partitions and is processing commands on them (a
        restarted instance gets its partitions back only once its old member has gone)."""
        deadline = time.monotonic() + timeout
        before = worker_metrics(worker).get("streamfold_worker_commands_total", 0.0)
        while True:
            time.sleep(0.2)
            metrics = worker_metrics(worker)
            busy = metrics.get("streamfold_worker_commands_total", 0.0) > before
            if busy and metrics.get("streamfold_worker_assigned_partitions", 0.0) > 0:
                return
            assert time.monotonic() < deadline, f"{worker.name} processes nothing"

    def kill_inside_a_transaction(self, victim: WorkerProcess) -> bool:
        """SIGKILL ``victim``; True when it died holding an open transaction with records.

        A live worker's transactions last a few hundred milliseconds at most, so a partition
        whose last stable offset still lags after 2 s belongs to the dead one.
        """
        victim.kill()
        time.sleep(2.0)
        return self.open_transactions() > 0


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


def worker_metrics(worker: WorkerProcess) -> dict[str, float]:
    """A worker's Prometheus metrics, each series summed over its labels."""
    with urllib.request.urlopen(f"{worker.health_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series = name.split("{", 1)[0]
            found[series] = found.get(series, 0.0) + float(value)
    return found


def results_by_command(run_settings: Any, codec: AvroCodec, topic: str) -> dict[str, list[Any]]:
    reader = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
    found: dict[str, list[Any]] = {}
    for message in read_to_end(run_settings, topic):
        _, record = reader.decode_dict(message.value() or b"")
        found.setdefault(record["command_id"], []).append(record)
    return found


@dataclass
class FaultyRun:
    """A worker of the faulty domain (2 partitions) with its producer and codec."""

    settings: KafkaSettings
    prefix: str
    codec: AvroCodec
    producer: CommandProducer
    worker: WorkerProcess

    @property
    def topics(self) -> AggregateTopics:
        return aggregate_topics("faulty", "widget", self.prefix)

    @property
    def dlq(self) -> str:
        return context_topics("faulty", self.prefix).dlq

    def results(self) -> dict[str, list[Any]]:
        return results_by_command(self.settings, self.codec, self.topics.results)


@pytest.fixture
def faulty_run(
    kafka_settings: KafkaSettings, schema_registry: Any, tmp_path: Path
) -> Iterator[FaultyRun]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "name: faulty\ncontext: tests.integration.runtime.faulty:faulty\n"
        "topics:\n  partitions: 2\n",
        encoding="utf-8",
    )
    (port,) = free_ports(1)
    worker = WorkerProcess(
        topology,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        registry_url=schema_registry.url,
        instance_id="f1",
        state_dir=tmp_path / "state",
        health_port=port,
        log_file=tmp_path / "worker.log",
        extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": prefix},
    )
    worker.start(timeout=120)
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(schema_registry.url))
    producer = CommandProducer(kafka_settings, codec, faulty, topic_prefix=prefix)
    try:
        yield FaultyRun(kafka_settings, prefix, codec, producer, worker)
    finally:
        producer.close()
        worker.stop()


WaitFor = Callable[[Callable[[], bool], float], None]


@dataclass
class TimedRun:
    """Workers of the timed domain (reminders, the alarm saga, middleware)."""

    settings: KafkaSettings
    registry_url: str
    prefix: str
    codec: AvroCodec
    producer: CommandProducer
    directory: Path
    topology: Path
    workers: list[WorkerProcess]

    @property
    def topics(self) -> AggregateTopics:
        return aggregate_topics("timed", "reminder", self.prefix)

    def worker(
        self, instance: str = "t1", topology: Path | None = None, **env: str
    ) -> WorkerProcess:
        (port,) = free_ports(1)
        process = WorkerProcess(
            topology or self.topology,
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

    def results(self) -> dict[str, list[Any]]:
        return results_by_command(self.settings, self.codec, self.topics.results)


@pytest.fixture
def timed_run(
    kafka_settings: KafkaSettings, schema_registry: Any, tmp_path: Path
) -> Iterator[TimedRun]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "name: timed\ncontext: tests.integration.runtime.timed:timed\n", encoding="utf-8"
    )
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(schema_registry.url))
    producer = CommandProducer(kafka_settings, codec, timed, topic_prefix=prefix)
    run = TimedRun(
        kafka_settings, schema_registry.url, prefix, codec, producer, tmp_path, topology, []
    )
    try:
        yield run
    finally:
        producer.close()
        for worker in run.workers:
            worker.stop()
