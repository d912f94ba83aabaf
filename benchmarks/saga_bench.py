"""Sagas and timers against the aggregate worker, exactly once, on one broker.

Run: ``python benchmarks/saga_bench.py [--inputs N] [--timers N] [--rounds 2] [--quick]``
from the repository root. It starts its own single-node Kafka and schema registry and runs
an in-process :class:`~streamfold.runtime.worker.AggregateWorker` (exactly-once, the retail
topology's batch settings) of the small ``bench`` context below, so every figure has its
baseline beside it, in interleaved rounds:

1. **saga inputs/s** with one command out each: ``Placed`` events preloaded into the order
   aggregate's events topic; a worker that runs only the ``relay`` saga repartitions each
   through the saga's inputs topic (the feed) and, per input, updates the instance's state
   and sends one ``Record`` command, in the transaction. Next to it, the **aggregate
   worker's commands/s**: the same number of ``Place`` commands preloaded, a worker that
   runs only the order aggregate. A rate is inputs over the time from the first processed
   to the last commit.
2. **timer firings/s**: ``--timers`` instances each set a timer due at one instant; once
   every instance is set, the worker restarts with its clock past that instant and fires
   them all (first firing to last commit).
3. **timer lateness**: timers due at a steady 200/s over a window; per timer, its command's
   record timestamp minus its due time (the ``issued_at`` header), p50/p99.

The report goes to ``benchmarks/reports/sagas.md``, rewritten after each measurement.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measurements import BenchStack, revision
from streamfold.cli.edge import default_cache_dir
from streamfold.contracts import headers as h
from streamfold.domain import BoundedContext, Command, Event, State
from streamfold.domain.naming import aggregate_topics, context_topics, saga_topics
from streamfold.domain.saga import SagaStep
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.observability.logging import configure_logging
from streamfold.observability.metrics import WorkerMetrics
from streamfold.registry.server import RegistryProcess
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import TopicSettings, TopologySpec
from streamfold.runtime.worker import AggregateWorker
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import read_to_end

REPORT = Path(__file__).resolve().parent / "reports" / "sagas.md"

bench = BoundedContext("bench", namespace="io.streamfold.bench")


class Place(Command):
    order_id: str
    amount: int
    due_ms: int = 0  # > 0: the relay's timer instant (epoch ms)


class Placed(Event):
    order_id: str
    amount: int
    due_ms: int = 0


class Order(State):
    order_id: str
    amount: int


class Record(Command):
    entry_id: str
    amount: int


class Recorded(Event):
    entry_id: str
    amount: int


class Entry(State):
    entry_id: str
    total: int


orders = bench.aggregate("order", state=Order, id="order_id")
ledger = bench.aggregate("ledger", state=Entry, id="entry_id")


@orders.decides(Place, creates=True)
def place(state: Order | None, cmd: Place) -> Placed:
    return Placed(order_id=cmd.order_id, amount=cmd.amount, due_ms=cmd.due_ms)


@orders.evolves(Placed)
def placed(state: Order | None, event: Placed) -> Order:
    return Order(order_id=event.order_id, amount=event.amount)


@ledger.decides(Record, creates=True)
def record(state: Entry | None, cmd: Record) -> Recorded:
    return Recorded(entry_id=cmd.entry_id, amount=cmd.amount)


@ledger.evolves(Recorded)
def recorded(state: Entry | None, event: Recorded) -> Entry:
    return Entry(entry_id=event.entry_id, total=(state.total if state else 0) + event.amount)


class Relayed(State):
    order_id: str
    relayed: int = 0


relay = bench.saga("relay", state=Relayed, sends=[Record])


@relay.on(Placed, correlate=lambda e: e.order_id, starts=True)
def on_placed(state: Relayed | None, event: Placed) -> SagaStep[Relayed]:
    after = Relayed(order_id=event.order_id, relayed=(state.relayed if state else 0) + 1)
    if event.due_ms:
        due = datetime.fromtimestamp(event.due_ms / 1000, UTC)
        return SagaStep(after, timers={"fire": due})
    return SagaStep(after, send=[Record(entry_id=event.order_id, amount=event.amount)])


@relay.on_timer("fire")
def on_fire(state: Relayed, timer: object) -> SagaStep[Relayed]:
    return SagaStep(state, send=[Record(entry_id=state.order_id, amount=1)])


class Counting(WorkerMetrics):
    """Metrics that note the first input, the last commit and the inputs committed."""

    def __init__(self) -> None:
        super().__init__()
        self.first = 0.0
        self.last = 0.0
        self.inputs = 0
        self.fired = 0
        self._pending = 0

    def _started(self) -> None:
        if not self.first:
            self.first = time.perf_counter()

    def command(self, aggregate: str, outcome: str, n: int = 1) -> None:
        self._started()
        self._pending += n
        super().command(aggregate, outcome, n)

    def saga_input(self, saga: str, outcome: str, commands: int = 0) -> None:
        self._started()
        self._pending += 1
        super().saga_input(saga, outcome, commands)

    def timer_fired(self, saga: str, lateness_seconds: float) -> None:
        self.fired += 1
        super().timer_fired(saga, lateness_seconds)

    def batch(self, size: int, commit_seconds: float) -> None:
        super().batch(size, commit_seconds)
        self.inputs += self._pending
        self._pending = 0
        self.last = time.perf_counter()

    def aborted(self) -> None:
        self._pending = 0
        super().aborted()

    @property
    def rate(self) -> float:
        return self.inputs / (self.last - self.first) if self.last > self.first else 0.0


def run(
    stack: BenchStack,
    prefix: str,
    kind: str,
    until: Any,
    metrics: Counting,
    name: str,
    clock: Any = time.time,
) -> None:
    spec = TopologySpec(
        name=f"bench-{name}",
        context="saga_bench:bench",
        aggregates=["order"] if kind == "aggregate" else [],
        sagas=["relay"] if kind == "saga" else [],
        topics=TopicSettings(partitions=stack.partitions, replication_factor=1),
    )
    settings = WorkerSettings(
        topic_prefix=prefix,
        state_dir=stack.directory / f"state-{name}",
        health_port=-1,
        instance_id=name,
        commit_interval_ms=100,
        max_batch=1000,
    )
    worker = AggregateWorker(
        spec, bench, settings, stack.kafka, stack.codec(), metrics, clock=clock
    )
    progress = [0, time.monotonic()]

    def done() -> bool:
        if metrics.inputs != progress[0]:
            progress[:] = [metrics.inputs, time.monotonic()]
        elif time.monotonic() - progress[1] > 120:
            raise SystemExit(f"{name} stalled at {metrics.inputs} inputs")
        return bool(until())

    worker.run(until=done)


def create_topics(stack: BenchStack, prefix: str) -> None:
    n = stack.partitions
    specs = [TopicSpec(context_topics("bench", prefix).dlq, n, 1)]
    for aggregate in ("order", "ledger"):
        names = aggregate_topics("bench", aggregate, prefix)
        specs += [TopicSpec(t, n, 1) for t in (names.commands, names.events, names.state)]
        specs += [TopicSpec(names.results, n, 1), TopicSpec.compacted(names.changelog, n, 1)]
    names_of = saga_topics("bench", "relay", prefix)
    specs += [TopicSpec(names_of.inputs, n, 1), TopicSpec.compacted(names_of.changelog, n, 1)]
    KafkaAdmin(stack.kafka).create_topics(specs)


def preload_commands(stack: BenchStack, prefix: str, n: int, due_ms: int = 0) -> None:
    producer = CommandProducer(stack.kafka, stack.codec(), bench, topic_prefix=prefix)
    for i in range(n):
        producer.send(Place(order_id=f"o{i}", amount=1 + i % 7, due_ms=due_ms))
    producer.flush()
    producer.close()


def preload_events(stack: BenchStack, prefix: str, n: int, due: list[int] | None = None) -> None:
    """``Placed`` events in the order events topic, as an order worker would have written
    them (its output without running it: the saga's input alone)."""
    topic = aggregate_topics("bench", "order", prefix).events
    writer = stack.codec().writer(topic, Placed, bench.namespace)
    producer = CommandProducer(stack.kafka, stack.codec(), bench, topic_prefix=prefix)
    for i in range(n):
        event = Placed(order_id=f"o{i}", amount=1 + i % 7, due_ms=due[i] if due else 0)
        headers = [
            (h.COMMAND_ID, f"00000000-0000-4000-8000-{i:012d}".encode()),
            (h.MESSAGE_TYPE, b"Placed"),
            (h.AGGREGATE_VERSION, b"1"),
        ]
        producer.send_raw(topic, f"o{i}".encode(), writer.encode(event), headers)
    producer.flush()
    producer.close()


def throughput(stack: BenchStack, n: int, rounds: int, report: Any) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"aggregate": [], "saga": []}
    plan = [(kind, r) for r in range(rounds) for kind in ("aggregate", "saga")]
    for kind, r in plan:
        prefix = stack.fresh_prefix()
        create_topics(stack, prefix)
        if kind == "aggregate":
            preload_commands(stack, prefix, n)
        else:
            preload_events(stack, prefix, n)
        metrics = Counting()
        run(stack, prefix, kind, lambda m=metrics: m.inputs >= n, metrics, f"{kind}{r}")
        rates[kind].append(metrics.rate)
        print(f"round {r + 1}: {kind}: {metrics.rate:,.0f}/s", flush=True)
        report(rates=rates)
    return rates


def timer_burst(stack: BenchStack, n: int, report: Any) -> float:
    """n timers due at one instant: firings per second, from the first to the last commit."""
    prefix = stack.fresh_prefix()
    create_topics(stack, prefix)
    due_s = time.time() + 3600  # far enough: set every timer first
    preload_events(stack, prefix, n, [int(due_s * 1000)] * n)
    metrics = Counting()
    run(stack, prefix, "saga", lambda: metrics.inputs >= n, metrics, "burst-set")
    # The timers are stored; the worker restarted with its clock at the due instant fires
    # them all (the same instance: it continues from its offsets and its stores).
    offset = due_s - time.time()
    fired = Counting()
    run(
        stack,
        prefix,
        "saga",
        lambda: fired.fired >= n and fired.inputs >= n,
        fired,
        "burst-set",
        clock=lambda: time.time() + offset,
    )
    rate = fired.rate  # from the first firing to the last commit (not the restart)
    report(burst=rate)
    return rate


def timer_lateness(stack: BenchStack, per_second: int, seconds: float, report: Any) -> list[float]:
    """Timers due at a steady rate; each firing's record timestamp minus its due time."""
    prefix = stack.fresh_prefix()
    create_topics(stack, prefix)
    n = int(per_second * seconds)
    start_ms = int((time.time() + 20) * 1000)  # every timer is set before the first is due
    due = [start_ms + int(i * 1000 / per_second) for i in range(n)]
    preload_events(stack, prefix, n, due)
    metrics = Counting()

    def until() -> bool:
        return metrics.fired >= n and metrics.inputs >= 2 * n

    run(stack, prefix, "saga", until, metrics, "lateness")
    topic = aggregate_topics("bench", "ledger", prefix).commands
    late = []
    for message in read_to_end(stack.kafka, topic):
        headers = h.header_map(message.headers())
        issued = datetime.fromisoformat(headers[h.ISSUED_AT]).timestamp()
        late.append(message.timestamp()[1] / 1000 - issued)
    report(lateness=late)
    return late


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_report(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    lines = [
        "# Sagas and timers",
        "",
        f"`python benchmarks/saga_bench.py {' '.join(sys.argv[1:])}` at {revision()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.inputs:,} inputs per round, "
        f"{args.rounds} interleaved rounds, {args.partitions} partitions, exactly-once, "
        "1,000 inputs or 100 ms per transaction. Best round counts.",
        "",
    ]
    rates = figures.get("rates")
    if rates:
        lines += ["| candidate | rounds (inputs/s) | best |", "|---|---|---|"]
        for kind, label in (
            ("aggregate", "aggregate worker: commands/s (1 command → 1 event, state, result)"),
            ("saga", "saga: inputs/s (feed + saga: 1 event → state, 1 command)"),
        ):
            values = rates.get(kind) or []
            if values:
                shown = ", ".join(f"{v:,.0f}" for v in values)
                lines.append(f"| {label} | {shown} | {max(values):,.0f} |")
        if rates.get("aggregate") and rates.get("saga"):
            ratio = max(rates["saga"]) / max(rates["aggregate"])
            lines += ["", f"Saga inputs/s over aggregate commands/s: {ratio:.2f} times.", ""]
    if "burst" in figures:
        lines += [
            f"Timer firings: {args.timers:,} timers due at one instant fired at "
            f"{figures['burst']:,.0f}/s (from the first firing to the last commit).",
            "",
        ]
    late = figures.get("lateness")
    if late:
        lines += [
            f"Timer lateness at {args.lateness_rate}/s for {args.lateness_seconds:.0f} s "
            f"({len(late):,} timers): p50 {quantile(late, 0.5) * 1000:,.0f} ms, "
            f"p99 {quantile(late, 0.99) * 1000:,.0f} ms, max {max(late) * 1000:,.0f} ms; "
            f"earliest {min(late) * 1000:,.0f} ms (never negative: never early).",
            "",
        ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=50_000)
    parser.add_argument("--timers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--lateness-rate", type=int, default=200)
    parser.add_argument("--lateness-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    args = parser.parse_args()
    if args.quick:
        args.inputs, args.timers, args.rounds, args.lateness_seconds = 5_000, 2_000, 1, 5.0
    configure_logging(level="WARNING")
    figures: dict[str, Any] = {}

    def report(**found: Any) -> None:
        figures.update(found)
        write_report(args, figures)

    with (
        tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp,
        LocalKafkaCluster(Path(tmp) / "kafka", default_cache_dir()) as kafka,
    ):
        (port,) = free_ports(1)
        registry_log = Path(tmp) / "registry.log"
        with RegistryProcess(kafka.bootstrap_servers, port, log_file=registry_log):
            stack = BenchStack(
                kafka.bootstrap_servers, f"http://127.0.0.1:{port}", Path(tmp), args.partitions
            )
            throughput(stack, args.inputs, args.rounds, report)
            timer_burst(stack, args.timers, report)
            timer_lateness(stack, args.lateness_rate, args.lateness_seconds, report)
    print(REPORT.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
