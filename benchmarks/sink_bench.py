"""The sink against a hand-written baseline: throughput into chDB, PROJECTED latency.

Run: ``python benchmarks/sink_bench.py [--events N] [--rate R] [--seconds S]`` from the
repository root (``--throughput-only`` or ``--latency-only`` for one part, printed and not
reported). It starts its own single-node Kafka and one schema registry, then:

1. throughput: ``--events`` store_stock events (SaleRecorded, as the worker writes them:
   Avro behind the Confluent header, with its headers) are produced once to an events topic;
   (a) the :class:`~streamfold.sink.connector.SinkConnector` projects them into a fresh chDB
   path, and (b) a hand-written loop does the same work without the framework (consume,
   decode with fastavro, the same row, one ``insert`` per batch with the same token, commit
   the offsets) into another fresh path. Rows/s from the first record read to the last
   commit; target: the sink at 100k rows/s or more.
2. PROJECTED latency: a worker process and a sink process (``streamfold sink``) on a fresh
   prefix; commands sent at ``--rate``/s; per command, the time from its result becoming
   visible (read_committed: the worker's transaction committed) to its PROJECTED ack
   becoming visible. Target: p99 at most 1 s.

The report goes to ``benchmarks/reports/sink.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clickhouse_connect
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from fastavro import schemaless_reader
from topologies.retail.domain import SaleRecorded, retail
from topologies.retail.workload import stock_commands

from measurements import ROOT, BenchStack, _metric_sum, _start_worker
from streamfold.cli.edge import default_cache_dir
from streamfold.contracts.avro import avro_schema
from streamfold.domain.naming import context_topics
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.observability.logging import configure_logging
from streamfold.registry.server import RegistryProcess
from streamfold.sink.arrow import arrow_schema, arrow_table
from streamfold.sink.connector import SinkConnector
from streamfold.sink.ddl import aggregate_tables
from streamfold.sink.process import SinkProcess
from streamfold.sink.spec import ConnectorSpec
from streamfold.sink.target import ClickHouseTarget
from streamfold.sink.types import json_text, row_converter
from streamfold.transport.commands import CommandProducer

REPORT = ROOT / "benchmarks" / "reports" / "sink.md"


def fill_events(stack: BenchStack, prefix: str, n: int) -> None:
    """``n`` SaleRecorded events over 10k aggregates on the store_stock events topic."""
    stack.create_topics(prefix)
    topic = stack.topics(prefix).events
    writer = stack.codec().writer(topic, SaleRecorded, retail.namespace)
    producer = Producer(stack.kafka.producer_config(**{"linger.ms": 20}))
    now = datetime.now(UTC)
    versions: dict[str, int] = {}
    for i in range(n):
        store, item = f"store-{i % 97}", f"item-{i % 10_000}"
        key = f"{store}/{item}"
        versions[key] = versions.get(key, 0) + 1
        value = writer.encode_dict(
            {
                "store_id": store,
                "item_id": item,
                "sale_id": str(i),
                "quantity": 2,
                "unit_price": Decimal("4.50"),
                "amount": Decimal("9.00"),
                "sold_at": now,
            }
        )
        headers = [
            ("command_id", str(uuid.uuid4()).encode()),
            ("message_type", b"SaleRecorded"),
            ("aggregate_version", str(versions[key]).encode()),
        ]
        while True:
            try:
                producer.produce(topic, value, key.encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def sink_throughput(stack: BenchStack, prefix: str, n: int, directory: Path) -> float:
    spec = ConnectorSpec(
        name=f"bench{uuid.uuid4().hex[:6]}",
        context="topologies.retail.domain:retail",
        aggregates=["store_stock"],
        target=f"chdb:{directory / 'sink-ch'}",
        database="retail",
        topic_prefix=prefix,
        batch_rows=20_000,
        batch_interval_ms=200,
        acks=False,
    )
    target = ClickHouseTarget(spec.target, "retail")
    sink = SinkConnector(spec, retail, stack.kafka, stack.codec(), target)
    table = "retail_store_stock_events"
    # The clock starts before the consume call that returned the first records, as the
    # hand-written loop's starts at its first record (joining the group is not timed).
    before: list[float] = [time.perf_counter()]

    def done() -> bool:
        if len(before) == 1:
            if sink.records_read:
                before.append(before[0])
            else:
                before[0] = time.perf_counter()
        rows = sink.metrics.rows.labels(table)._value.get()
        return bool(rows >= n)

    sink.start()
    sink.run(until=done)
    elapsed = time.perf_counter() - before[-1]
    _c, rows = target.query(f"SELECT count() FROM retail.{table}")
    target.close()
    assert rows[0][0] == n, rows
    return n / elapsed


def handwritten_throughput(stack: BenchStack, prefix: str, n: int, directory: Path) -> float:
    """Consume, decode, the same row, insert per 20k rows with a token, commit offsets.

    The insert is the sink's, clickhouse-connect's fastest for Python values: an Arrow table
    of the columns (the sink's own conversion, :mod:`streamfold.sink.arrow`), the event
    time as milliseconds.
    """
    table = next(t for t in aggregate_tables(retail, "store_stock") if t.kind == "events")
    target = ClickHouseTarget(f"chdb:{directory / 'hand-ch'}", "retail")
    target.ensure([table])
    target.close()
    client = clickhouse_connect.get_client(interface="chdb", path=str(directory / "hand-ch"))
    schema = avro_schema(SaleRecorded, retail.namespace)
    from fastavro import parse_schema  # noqa: PLC0415

    parsed = parse_schema(schema)
    convert = row_converter(schema, table.model_columns)
    topic = stack.topics(prefix).events
    consumer = Consumer(stack.kafka.consumer_config(f"hand-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    arrow = arrow_schema(table)
    pending: dict[int, list[list[Any]]] = {}
    firsts: dict[int, int] = {}
    done = 0
    first = 0.0
    try:
        while done < n:
            messages = consumer.consume(5000, 0.05)
            for m in messages:
                if m.error() is not None:
                    continue
                if not first:
                    first = time.perf_counter()
                headers = dict(m.headers() or [])
                buf = BytesIO(m.value())
                buf.seek(5)
                record: dict[str, Any] = schemaless_reader(buf, parsed, None)  # type: ignore[assignment]
                _k, millis = m.timestamp()
                partition = m.partition() or 0
                firsts.setdefault(partition, m.offset() or 0)
                pending.setdefault(partition, []).append(
                    [
                        "",
                        (m.key() or b"").decode(),
                        int(headers["aggregate_version"]),
                        "SaleRecorded",
                        millis,
                        headers["command_id"].decode(),
                        *convert(record),
                        json_text(record),
                        topic,
                        partition,
                        m.offset(),
                    ]
                )
            for partition, rows in list(pending.items()):
                if len(rows) >= 20_000 or (rows and not messages):
                    token = f"hand:{partition}:{firsts[partition]}-{rows[-1][-1]}"
                    client.insert_arrow(
                        table.name,
                        arrow_table(arrow, list(zip(*rows, strict=True))),
                        database="retail",
                        settings={"insert_deduplication_token": token},
                    )
                    consumer.commit(
                        offsets=[TopicPartition(topic, partition, rows[-1][-1] + 1)],
                        asynchronous=False,
                    )
                    done += len(rows)
                    del pending[partition], firsts[partition]
        return n / (time.perf_counter() - first)
    finally:
        consumer.close()
        client.close()


def projected_latency(
    stack: BenchStack, rate: int, seconds: float, directory: Path
) -> tuple[list[float], int]:
    """Seconds from a command's result being visible to its PROJECTED ack being visible."""
    prefix = stack.fresh_prefix()
    stack.create_topics(prefix)
    worker = _start_worker(stack, prefix, "projected")
    (port,) = free_ports(1)
    sink = SinkProcess(
        ROOT / "connectors" / "retail",
        bootstrap_servers=stack.bootstrap,
        registry_url=stack.registry_url,
        health_port=port,
        target=f"chdb:{directory / 'latency-ch'}",
        topic_prefix=prefix,
        log_file=directory / "sink.log",
    )
    sink.start(timeout=120)
    seen: dict[tuple[str, str], float] = {}
    halt = threading.Event()
    topics = [stack.topics(prefix).results, context_topics("retail", prefix).projected]

    def watch() -> None:
        consumer = Consumer(stack.kafka.consumer_config(f"watch-{uuid.uuid4().hex}"))
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(6)])
        while not halt.is_set():
            for m in consumer.consume(1000, 0.01):
                if m.error() is None:
                    key = (m.topic() or "", (m.key() or b"").decode())
                    seen.setdefault(key, time.perf_counter())
        consumer.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        producer = CommandProducer(
            stack.kafka, stack.codec(), retail, topic_prefix=prefix, **{"linger.ms": 0}
        )
        ids = []
        start = time.perf_counter()
        for i, command in enumerate(stock_commands(2000, int(rate * seconds), seed=17)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ids.append(producer.send(command))
        producer.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any((topics[1], i) not in seen for i in ids):
            time.sleep(0.2)
        flushes = _metric_sum(sink.health_url, "streamfold_sink_flush_seconds_count")
        flush_seconds = _metric_sum(sink.health_url, "streamfold_sink_flush_seconds_sum")
        print(
            f"sink: {flushes:.0f} flushes, {flush_seconds / max(flushes, 1) * 1000:.0f} ms each"
            f" on average ({flush_seconds / seconds:.0%} of the time)",
            flush=True,
        )
    finally:
        halt.set()
        watcher.join()
        sink.stop()
        worker.stop()
    latencies = [
        seen[(topics[1], i)] - seen[(topics[0], i)]
        for i in ids
        if (topics[1], i) in seen and (topics[0], i) in seen
    ]
    return latencies, len(ids)


def _summary(latencies: list[float], sent: int) -> str:
    ordered = sorted(latencies)
    q = lambda p: ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000  # noqa: E731
    return f"{len(ordered):,} of {sent:,} acked: p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput")
    parser.add_argument(
        "--throughput-only", action="store_true", help="skip the latency; print, no report"
    )
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    stamp = time.strftime("%Y-%m-%d %H:%M")
    with (
        tempfile.TemporaryDirectory(prefix="sink-bench-") as tmp,
        LocalKafkaCluster(Path(tmp) / "kafka", default_cache_dir()) as kafka,
    ):
        (port,) = free_ports(1)
        with RegistryProcess(kafka.bootstrap_servers, port, log_file=Path(tmp) / "registry.log"):
            stack = BenchStack(kafka.bootstrap_servers, f"http://127.0.0.1:{port}", Path(tmp))
            rates: dict[str, list[float]] = {"sink": [], "hand": []}
            if args.latency_only:
                latencies, sent = projected_latency(stack, args.rate, args.seconds, Path(tmp))
                print(_summary(latencies, sent))
                return
            prefix = stack.fresh_prefix()
            fill_events(stack, prefix, args.events)
            print(f"{args.events:,} events produced", flush=True)
            for r in range(args.rounds):
                directory = Path(tmp) / f"round-{r}"
                directory.mkdir()
                rates["hand"].append(handwritten_throughput(stack, prefix, args.events, directory))
                rates["sink"].append(sink_throughput(stack, prefix, args.events, directory))
                print(f"round {r + 1}: {rates}", flush=True)
            if args.throughput_only:
                return
            latencies, sent = projected_latency(stack, args.rate, args.seconds, Path(tmp))
    ordered = sorted(latencies)
    q = lambda p: ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000  # noqa: E731
    best_sink, best_hand = max(rates["sink"]), max(rates["hand"])
    lines = [
        "# Sink: throughput into chDB, PROJECTED latency",
        "",
        f"`python benchmarks/sink_bench.py --events {args.events} --rate {args.rate} "
        f"--seconds {args.seconds:g}`, {stamp} UTC. Machine: 2 shared cores, a single-node "
        "local Kafka broker and one registry process on the same machine.",
        "",
        f"## 1. Throughput ({args.events:,} events, 6 partitions, into chDB; "
        f"best of {args.rounds} interleaved rounds)",
        "",
        "| candidate | rows/s (best) | each round | vs (b) |",
        "|---|---:|---|---:|",
        f"| (a) SinkConnector (intents, tokens, offsets) | {best_sink:,.0f} | "
        + ", ".join(f"{r:,.0f}" for r in rates["sink"])
        + f" | {best_sink / best_hand:.0%} |",
        f"| (b) hand-written consume → decode → insert → commit | {best_hand:,.0f} | "
        + ", ".join(f"{r:,.0f}" for r in rates["hand"])
        + " | 100% |",
        "",
        f"Sink: {best_sink:,.0f} rows/s (target ≥ 100k rows/s: "
        f"{'met' if best_sink >= 100_000 else '**missed**'}).",
        "",
        f"## 2. PROJECTED latency ({sent:,} commands at {args.rate}/s, worker + sink processes)",
        "",
        "From a command's result being visible (the worker's transaction committed) to its "
        "PROJECTED ack being visible, both read with read_committed by the same consumer.",
        "",
        "| commands acked | p50 ms | p95 ms | p99 ms | max ms | mean ms |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(ordered):,} | {q(0.5):,.0f} | {q(0.95):,.0f} | {q(0.99):,.0f} | "
        f"{ordered[-1] * 1000:,.0f} | {statistics.mean(ordered) * 1000:,.0f} |",
        "",
        f"p99: {q(0.99):,.0f} ms (target ≤ 1,000 ms: "
        f"{'met' if q(0.99) <= 1000 else '**missed**'}).",
        "",
    ]
    REPORT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
