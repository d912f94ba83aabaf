"""The command gateway: PROCESSED latency beside the broker's floor, throughput, memory.

Run: ``python benchmarks/gateway_bench.py [--rate 500] [--seconds 20] [--clients 64]
[--requests 4000] [--rounds 2] [--profile]`` from the repository root. It starts its own
single-node Kafka (the fetched jars), one schema registry, one retail worker (exactly-once)
and one gateway process (``streamfold gateway``), then measures in the same run, in
interleaved rounds, so that each figure stands beside its baseline:

1. latency with exactly-once on, commands sent open-loop at ``--rate``/s:
   (a) the bare-transaction floor (:func:`transaction_floor.measure_floor`: the broker's
   cost of one checkpoint, nothing processed), p50 and p99 of a whole checkpoint;
   (b) the worker reached straight through Kafka (a producer, and a ``read_committed``
   consumer of the results): from send to result visible;
   (c) the gateway, ``Wait-Stage: processed``: from the request sent to the answer read.
   Target: (c)'s p99 at most (a)'s p99 + 30 ms;
2. throughput with ``--clients`` concurrent clients, each sending its next command when
   the last is answered, at ``Wait-Stage: sent`` and ``processed``; beside them, the same
   commands sent straight to Kafka by one producer (acked), and processed by the same worker
   (results seen);
3. the gateway's RSS after the runs, and its peak during them.

The HTTP client is a few lines of asyncio (keep-alive HTTP/1.1, one request in flight per
connection), so the client costs little of the two cores the gateway, the worker and the
broker share. ``--profile`` samples the gateway with py-spy during one more throughput run
at ``processed``. The report goes to ``benchmarks/reports/gateway.md`` and is rewritten
after every measurement, so a long run loses nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from topologies.retail.domain import retail
from topologies.retail.workload import stock_commands

from measurements import ResultWatcher, paced, profile_summary, revision
from streamfold.cli.edge import default_cache_dir
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain import Command
from streamfold.domain.naming import aggregate_topics, command_path
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.gateway.server import GatewayProcess
from streamfold.registry.server import RegistryProcess
from streamfold.runtime.process import WorkerProcess
from streamfold.transport.commands import CommandProducer
from streamfold.transport.settings import KafkaSettings
from transaction_floor import measure_floor

ROOT = Path(__file__).resolve().parents[1]
#: The retail write path alone (no sagas or handlers), as before they existed.
TOPOLOGY = ROOT / "topologies" / "retail" / "stock-only.yaml"
REPORT = ROOT / "benchmarks" / "reports" / "gateway.md"
AGGREGATES = 2000


# ---------------------------------------------------------------------- the HTTP client


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        lines = [f"POST {path} HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


def requests_of(commands: list[Command]) -> list[tuple[str, bytes]]:
    """Each command as the gateway's route and JSON body."""
    found = []
    for command in commands:
        aggregate = retail.aggregate_for(type(command))
        path = command_path("retail", aggregate.name, type(command).__name__)
        found.append((path, command.model_dump_json().encode()))
    return found


async def open_loop(
    url: str, requests: list[tuple[str, bytes]], rate: int, stage: str
) -> list[float]:
    """Send at ``rate``/s whatever the answers do; each request's seconds to its answer."""
    host, port = url.removeprefix("http://").split(":")
    idle: list[Connection] = []
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def one(path: str, body: bytes) -> None:
        connection = idle.pop() if idle else await Connection.open(host, int(port))
        started = time.perf_counter()
        status = await connection.post(
            path, body, {"Wait-Stage": stage, "Command-Id": str(uuid.uuid4())}
        )
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        idle.append(connection)

    tasks = []
    start = time.perf_counter()
    for i, (path, body) in enumerate(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(path, body)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    _check(statuses)
    return latencies


async def closed_loop(
    url: str, requests: list[tuple[str, bytes]], clients: int, stage: str
) -> float:
    """``clients`` clients, each sending its next request once answered; requests/s."""
    host, port = url.removeprefix("http://").split(":")
    queue = list(reversed(requests))
    statuses: dict[int, int] = {}

    async def client() -> None:
        connection = await Connection.open(host, int(port))
        while queue:
            path, body = queue.pop()
            status = await connection.post(
                path, body, {"Wait-Stage": stage, "Command-Id": str(uuid.uuid4())}
            )
            statuses[status] = statuses.get(status, 0) + 1
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    _check(statuses)
    return len(requests) / elapsed


def _check(statuses: dict[int, int]) -> None:
    """200 (accepted) and 409 (rejected by the domain) are answers; anything else is not."""
    odd = {s: n for s, n in statuses.items() if s not in (200, 409)}
    if odd:
        raise SystemExit(f"unexpected answers: {odd} (all: {statuses})")


# ---------------------------------------------------------------------- baselines


def direct_latency(
    kafka: KafkaSettings, registry_url: str, prefix: str, commands: list[Command], rate: int
) -> list[float]:
    """Straight through Kafka: a producer at ``rate``/s, a consumer of the results."""
    topic = aggregate_topics("retail", "store_stock", prefix).results
    watcher = ResultWatcher(kafka, topic, 6)
    watcher.start()
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry_url))
    producer = CommandProducer(kafka, codec, retail, topic_prefix=prefix, **{"linger.ms": 0})
    try:
        sent = paced(producer, commands, rate)
        watcher.wait_for(list(sent), 120)
    finally:
        producer.close()
        watcher.stop()
    missing = [i for i in sent if i not in watcher.seen]
    if missing:
        raise SystemExit(f"{len(missing)} results never arrived")
    return [watcher.seen[i] - t for i, t in sent.items()]


def direct_throughput(
    kafka: KafkaSettings, registry_url: str, prefix: str, commands: list[Command]
) -> tuple[float, float]:
    """One producer: commands/s acknowledged, and commands/s until every result is seen."""
    topic = aggregate_topics("retail", "store_stock", prefix).results
    watcher = ResultWatcher(kafka, topic, 6)
    watcher.start()
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry_url))
    producer = CommandProducer(kafka, codec, retail, topic_prefix=prefix)
    try:
        producer.topic_of(type(commands[0]))
        ids = []
        started = time.perf_counter()
        for command in commands:
            ids.append(producer.send(command))
        producer.flush()
        acked = time.perf_counter() - started
        watcher.wait_for(ids, 300)
        processed = max(watcher.seen[i] for i in ids) - started
    finally:
        producer.close()
        watcher.stop()
    return len(commands) / acked, len(commands) / processed


# ---------------------------------------------------------------------- the run


class Report:
    """The report file, rewritten whole after every measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.profile: list[str] = []

    def add(self, section: str, line: str) -> None:
        self.rows.setdefault(section, []).append(line)
        print(f"{section}: {line}", flush=True)
        self.write()

    def write(self) -> None:
        a = self.args
        lines = [
            "# Gateway benchmark",
            "",
            f"`python benchmarks/gateway_bench.py --rate {a.rate} --seconds {a.seconds} "
            f"--clients {a.clients} --requests {a.requests} --rounds {a.rounds}` at "
            f"{revision()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores; one broker, one worker (exactly-once), one gateway.",
            "",
        ]
        for section, rows in self.rows.items():
            lines += [f"## {section}", "", *rows, ""]
        lines += self.notes
        if self.profile:
            lines += ["## Where the gateway's time goes (py-spy)", "", *self.profile, ""]
        REPORT.write_text("\n".join(lines), encoding="utf-8")


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000


class RssPeak(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.2):
            self.peak = max(self.peak, self.process.memory_info().rss / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4000, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floor-commands", type=int, default=10, help="per transaction")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    report = Report(args)
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        directory = Path(tmp)
        with LocalKafkaCluster(directory / "kafka", default_cache_dir()) as kafka:
            run(args, report, directory, kafka.bootstrap_servers)
    print(f"report: {REPORT}")


def run(args: argparse.Namespace, report: Report, directory: Path, bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    registry_port, worker_port, gateway_port = free_ports(3)
    prefix = f"gb{uuid.uuid4().hex[:6]}."
    registry = RegistryProcess(bootstrap, registry_port, log_file=directory / "registry.log")
    worker = WorkerProcess(
        TOPOLOGY,
        bootstrap_servers=bootstrap,
        registry_url=f"http://127.0.0.1:{registry_port}",
        instance_id="bench",
        state_dir=directory / "state",
        health_port=worker_port,
        log_file=directory / "worker.log",
        extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": prefix},
    )
    gateway = GatewayProcess(
        TOPOLOGY,
        bootstrap_servers=bootstrap,
        registry_url=f"http://127.0.0.1:{registry_port}",
        port=gateway_port,
        connectors_dir=directory / "no-connector",  # commands only: no sink in this run
        log_file=directory / "gateway.log",
        extra_env={
            "STREAMFOLD_GATEWAY_TOPIC_PREFIX": prefix,
            "STREAMFOLD_LOG_LEVEL": "WARNING",
        },
    )
    registry.start(timeout=120)
    try:
        worker.start(timeout=180)
        gateway.start(timeout=120)
        assert gateway.pid is not None
        peak = RssPeak(gateway.pid)
        peak.start()
        measure(args, report, kafka, registry.url, prefix, gateway, bootstrap)
        peak.halt.set()
        rss = psutil.Process(gateway.pid).memory_info().rss / 2**20
        report.add(
            "3. Gateway memory", f"- RSS after the runs: {rss:.0f} MB; peak {peak.peak:.0f} MB"
        )
    finally:
        gateway.stop()
        worker.stop()
        registry.stop()


def measure(
    args: argparse.Namespace,
    report: Report,
    kafka: KafkaSettings,
    registry_url: str,
    prefix: str,
    gateway: GatewayProcess,
    bootstrap: str,
) -> None:
    seed = iter(range(100, 10_000))

    def fresh(n: int) -> list[Command]:
        return list(stock_commands(AGGREGATES, n, seed=next(seed)))

    n = int(args.rate * args.seconds)
    # warm-up: every command type's schema, the worker's stores, the connections
    asyncio.run(open_loop(gateway.url, requests_of(fresh(500)), args.rate, "processed"))
    direct_latency(kafka, registry_url, prefix, fresh(200), args.rate)
    section = f"1. PROCESSED latency at {args.rate} commands/s (ms)"
    report.add(
        section,
        "| round | floor p50 | floor p99 | Kafka p50 | Kafka p99 | gateway p50 | gateway p99 "
        "| gateway p99 - floor p99 |",
    )
    report.add(section, "|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in range(1, args.rounds + 1):
        floor = measure_floor(bootstrap, 300, args.floor_commands, prefix=f"floor{r}.")
        f50, f99 = percentiles(floor["whole checkpoint"])
        k50, k99 = percentiles(direct_latency(kafka, registry_url, prefix, fresh(n), args.rate))
        latencies = asyncio.run(
            open_loop(gateway.url, requests_of(fresh(n)), args.rate, "processed")
        )
        g50, g99 = percentiles(latencies)
        report.add(
            section,
            f"| {r} | {f50:.1f} | {f99:.1f} | {k50:.1f} | {k99:.1f} | {g50:.1f} | {g99:.1f} "
            f"| {g99 - f99:+.1f} |",
        )
    section = f"2. Throughput with {args.clients} clients (commands/s)"
    report.add(
        section,
        "| round | Kafka acked | gateway SENT | ratio | worker via Kafka | gateway PROCESSED "
        "| ratio |",
    )
    report.add(section, "|---|---:|---:|---:|---:|---:|---:|")
    for r in range(1, args.rounds + 1):
        acked, processed = direct_throughput(kafka, registry_url, prefix, fresh(args.requests))
        sent = asyncio.run(
            closed_loop(gateway.url, requests_of(fresh(args.requests)), args.clients, "sent")
        )
        done = asyncio.run(
            closed_loop(gateway.url, requests_of(fresh(args.requests)), args.clients, "processed")
        )
        report.add(
            section,
            f"| {r} | {acked:,.0f} | {sent:,.0f} | {sent / acked:.2f} | {processed:,.0f} "
            f"| {done:,.0f} | {done / processed:.2f} |",
        )
    if args.profile:
        assert gateway.pid is not None
        requests = requests_of(fresh(args.requests))
        action: Callable[[], Any] = lambda: asyncio.run(  # noqa: E731
            closed_loop(gateway.url, requests, args.clients, "processed")
        )
        report.profile = profile_summary(
            action, Path(tempfile.gettempdir()), "gateway", pid=gateway.pid
        )
        report.write()


if __name__ == "__main__":
    main()
