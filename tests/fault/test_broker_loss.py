"""Broker loss under load: the write path, the sink and the gateway lose and double nothing.

On three brokers (RF 3, ``min.insync.replicas`` 2) with two workers, a chDB sink and the
gateway running and commands flowing at a steady rate (straight to Kafka, and through the
gateway with PROJECTED waits), the test SIGKILLs the broker leading the most store-stock
partitions, brings it back, SIGKILLs another, brings it back, then restarts all three one
at a time. Then:

- every command has exactly one result, the events' versions are contiguous and the state
  is their fold (streamfold.testing.invariants): 0 lost, 0 duplicated;
- ClickHouse holds each event once;
- every PROJECTED wait was answered (200) or answered 202 and its command found later;
- how long results stalled after each fault: the longest gap between two results seen in
  the 60 s after it (``benchmarks/reports/faults.md``).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from topologies.retail.domain import ReceiveSupply, retail
from topologies.retail.workload import stock_commands

from streamfold.client import Client, CommandPending, GatewayUnavailable
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.gateway.server import GatewayProcess
from streamfold.registry.server import RegistryProcess
from streamfold.sink.process import SinkProcess
from streamfold.sink.progress import caught_up, record_ends
from streamfold.sink.spec import load_connector
from streamfold.sink.target import ClickHouseTarget
from streamfold.transport.admin import KafkaAdmin
from streamfold.transport.commands import CommandProducer
from streamfold.transport.settings import KafkaSettings
from tests.fault.report import write_section
from tests.fault.watch import ResultWatcher
from tests.integration.runtime.conftest import TOPOLOGY, RetailRun

pytestmark = [pytest.mark.fault, pytest.mark.integration]

CONNECTOR = Path(__file__).resolve().parents[2] / "connectors" / "retail"
PATIENCE = 600.0


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, streamfold_cache_dir: Path
) -> Iterator[LocalKafkaCluster]:
    config = {"min.insync.replicas": "2"}
    directory = tmp_path_factory.mktemp("kafka3-mir2")
    with LocalKafkaCluster(directory, streamfold_cache_dir, nodes=3, extra_config=config) as c:
        yield c


def wait_for_full_isr(settings: KafkaSettings, topics: list[str], timeout: float = 120) -> None:
    admin = KafkaAdmin(settings)
    deadline = time.monotonic() + timeout
    while True:
        short = [
            (t, p.id)
            for t in topics
            for p in admin.describe(t).partitions
            if len(p.isrs) < 3 or p.leader < 0
        ]
        if not short:
            return
        assert time.monotonic() < deadline, f"partitions without their 3 replicas: {short}"
        time.sleep(1.0)


def stop_node(cluster: LocalKafkaCluster, node_id: int) -> None:
    """A graceful stop of one broker (SIGTERM), as a rolling restart does."""
    node = cluster.node(node_id)
    assert node.process is not None
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(timeout=120)


@pytest.mark.timeout(1800)
def stacks_in(log_file: Path) -> str:
    """The threads' stacks a hung child wrote to its log on SIGUSR1 (faulthandler), and the
    lines before them: where it hung, in the failure's message."""
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith(("Thread 0x", "Current thread"))]
    first = starts[0] if starts else len(lines)
    return "\n".join(lines[max(0, first - 15) :])[-6_000:]


def test_broker_loss_under_load_loses_and_doubles_nothing(
    cluster: LocalKafkaCluster, tmp_path: Path, test_scale: float
) -> None:
    settings = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    prefix = f"b{uuid.uuid4().hex[:8]}."
    registry_port, sink_port, gateway_port = free_ports(3)
    registry = RegistryProcess(
        cluster.bootstrap_servers,
        registry_port,
        topic=f"_schemas-{prefix}",
        log_file=tmp_path / "registry.log",
    )
    registry.start(timeout=120)
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry.url))
    producer = CommandProducer(settings, codec, retail, topic_prefix=prefix)
    run = RetailRun(settings, registry.url, prefix, codec, producer, tmp_path, [])
    target = f"chdb:{tmp_path / 'clickhouse'}"
    sink = SinkProcess(
        CONNECTOR,
        bootstrap_servers=cluster.bootstrap_servers,
        registry_url=registry.url,
        health_port=sink_port,
        target=target,
        topic_prefix=prefix,
        log_file=tmp_path / "sink.log",
    )
    gateway = GatewayProcess(
        TOPOLOGY,
        bootstrap_servers=cluster.bootstrap_servers,
        registry_url=registry.url,
        port=gateway_port,
        connectors_dir=CONNECTOR,
        clickhouse_target=target,
        log_file=tmp_path / "gateway.log",
        extra_env={"STREAMFOLD_GATEWAY_TOPIC_PREFIX": prefix},
    )
    phase = max(8.0, 30.0 * test_scale)  # seconds a broker stays down, and between faults
    stalls: dict[str, float] = {}
    sent: set[str] = set()
    projected: dict[str, str] = {}  # command id -> "200" or "202"
    retried: set[str] = set()  # 503 or no answer: sent again with the same id, until answered
    failures: list[BaseException] = []
    stop = threading.Event()
    watcher: ResultWatcher | None = None
    try:
        run.worker("w1")
        run.worker("w2")
        sink.start(timeout=180)
        gateway.start(timeout=180)
        topics = run.stock_topics
        watcher = ResultWatcher(settings, topics.results, codec)

        def direct() -> None:  # about 200 commands/s straight to Kafka
            try:
                for n, command in enumerate(stock_commands(2_000, 10**9, 31)):
                    if stop.is_set():
                        break
                    sent.add(producer.send(command))
                    if n % 20 == 0:
                        producer.flush(120)
                        time.sleep(0.1)
                producer.flush(120)
            except BaseException as exc:  # noqa: BLE001 - the main thread asserts there is none
                failures.append(exc)

        def through_the_gateway(lane: int) -> None:  # PROJECTED waits, a few a second
            with Client(gateway.url, context=retail) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    command = ReceiveSupply(
                        store_id=f"gw{lane}", item_id=f"gw-{n % 50}", supplier_id="s-1", quantity=1
                    )
                    command_id = str(uuid.uuid4())
                    while True:  # a 503 was not sent: send it again, with the same id
                        try:
                            client.send(
                                command, wait="projected", timeout=20, command_id=command_id
                            )
                            projected[command_id] = "200"
                        except CommandPending:
                            projected[command_id] = "202"
                        except GatewayUnavailable:
                            retried.add(command_id)
                            time.sleep(0.5)
                            continue
                        except BaseException as exc:  # noqa: BLE001 - asserted below
                            failures.append(exc)
                            return
                        break
                    time.sleep(0.2)

        # Three callers of the gateway: a wait that outlasts a projection stall (20 s, then
        # 202) holds up only its own caller.
        load = [
            threading.Thread(target=direct),
            *(threading.Thread(target=through_the_gateway, args=(lane,)) for lane in range(3)),
        ]
        for thread in load:
            thread.start()
        time.sleep(phase / 2)
        leaders = KafkaAdmin(settings).describe(topics.commands).partitions
        counts = {n.node_id: sum(p.leader == n.node_id for p in leaders) for n in cluster.nodes}
        first = max(counts, key=lambda n: counts[n])
        kill_at = time.monotonic()
        cluster.kill_node(first)
        time.sleep(phase)
        cluster.restart_node(first)
        stalls[f"SIGKILL of broker {first} (led {counts[first]} of 6 command partitions)"] = (
            watcher.stall_after(kill_at)
        )
        wait_for_full_isr(settings, [topics.commands, topics.results, topics.changelog])
        second = next(n.node_id for n in cluster.nodes if n.node_id != first)
        kill_at = time.monotonic()
        cluster.kill_node(second)
        time.sleep(phase)
        cluster.restart_node(second)
        stalls[f"SIGKILL of broker {second}"] = watcher.stall_after(kill_at)
        for node in cluster.nodes:
            wait_for_full_isr(settings, [topics.commands, topics.results, topics.changelog])
            stop_at = time.monotonic()
            stop_node(cluster, node.node_id)
            cluster.restart_node(node.node_id)
            stalls[f"rolling restart of broker {node.node_id}"] = watcher.stall_after(
                stop_at, min(60.0, time.monotonic() - stop_at + phase / 2)
            )
            time.sleep(phase / 2)
        stop.set()
        for thread in load:
            thread.join()
        assert not failures, failures[:3]
        assert len(projected) > 10, "the gateway's load never ran"
        everything = sent | set(projected)
        run.wait_until_processed(everything, PATIENCE, resent=retried)
        report = run.check_stock(everything, retried)
        assert report.problems == [], report.problems[:10]
        # Every 202 is found later, PROJECTED.
        with Client(gateway.url, context=retail) as client:
            late = [c for c, status in projected.items() if status == "202"]
            for command_id in late:
                assert client.wait(command_id, wait="projected", timeout=120).stage == "projected"
        # ClickHouse holds each event once.
        spec = load_connector(CONNECTOR, target=target, topic_prefix=prefix)
        ends = record_ends(settings, [topics.events, topics.state, topics.results, topics.commands])
        deadline = time.monotonic() + PATIENCE
        while not caught_up(settings, spec.group_id, ends):
            assert time.monotonic() < deadline, "the sink never caught up"
            time.sleep(1.0)
        # Nothing died, and no worker hung: each stops on SIGTERM (a hung one is SIGKILLed
        # after 30 s, its stacks in its log).
        for child in [gateway, sink, *run.workers]:
            assert child.process is not None and child.process.poll() is None, child.log_file
        stopped = {w.instance_id: w.stop() for w in run.workers}
        hung = {w.instance_id: stacks_in(w.log_file) for w in run.workers if stopped[w.instance_id]}
        assert stopped == {"w1": 0, "w2": 0}, f"a worker did not stop on SIGTERM: {stopped} {hung}"
    finally:
        stop.set()
        if watcher is not None:
            watcher.stop()
        for process in [gateway, sink, *run.workers, registry]:
            process.stop()
        producer.close()
    clickhouse = ClickHouseTarget(target, "retail")
    try:
        ((rows, unique),) = clickhouse.query(
            "SELECT count(), uniqExact(aggregate_id, version) FROM retail.retail_store_stock_events"
        )[1]
    finally:
        clickhouse.close()
    assert rows == unique == report.events, (rows, unique, report.events)
    rejoined = sum(
        log.read_text(encoding="utf-8").count("rejoining with a new producer")
        for log in tmp_path.glob("worker-*.log")
    )
    sink_rejoins = (
        (tmp_path / "sink.log").read_text(encoding="utf-8").count("the group moved on; rejoining")
    )
    lines = "\n".join(f"| {fault} | {stall:.2f} s |" for fault, stall in stalls.items())
    write_section(
        "broker-loss",
        "Broker loss under load (3 brokers, RF 3, min.insync.replicas 2)",
        f"2 workers, a chDB sink and the gateway; commands at about 200/s straight to Kafka and"
        f" a few a second through the gateway with PROJECTED waits; each broker down {phase:.0f}"
        f" s.\n\n{len(sent) + len(projected):,} commands: 0 lost, 0 duplicated, versions"
        f" contiguous ({report.events:,} events); ClickHouse {rows:,} event rows, {unique:,}"
        f" distinct; PROJECTED waits: {sum(s == '200' for s in projected.values())} answered,"
        f" {len(late)} answered 202 and found later; {len(retried)} sent again with the same id"
        f" after a 503 or no answer. Both workers stayed up and stopped on SIGTERM; they"
        f" rejoined with a new producer {rejoined} times (fenced, or a transactional call"
        " that did not return in its bound). The sink stayed up; it rejoined its group"
        f" {sink_rejoins} times (a batch's intent refused: the group had moved on).\n\n"
        "Longest gap between results in the minute after each fault:\n\n"
        f"| fault | stall |\n|---|---|\n{lines}\n",
        test_scale,
    )
