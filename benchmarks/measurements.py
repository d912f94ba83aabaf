"""The measurements of the worker benchmark (see ``worker_bench.py``): one function each."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from topologies.retail.domain import StoreStock, retail
from topologies.retail.workload import stock_commands

from handwritten_loop import LoopTiming
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain import Command
from streamfold.domain.naming import AggregateTopics, aggregate_topics, context_topics
from streamfold.embedded.ports import free_ports
from streamfold.observability.metrics import WorkerMetrics
from streamfold.runtime.process import WorkerProcess
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import TopicSettings, TopologySpec
from streamfold.runtime.worker import AggregateWorker
from streamfold.state.entry import AggregateEntry, Recent, StoredResult
from streamfold.state.restore import ChangelogRestorer
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import reader, watermarks
from streamfold.transport.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
#: The retail write path alone (no sagas or handlers), as before they existed.
TOPOLOGY = ROOT / "topologies" / "retail" / "stock-only.yaml"
WARM_UP = 200


@dataclass
class BenchStack:
    """The broker, the registry and a scratch directory of one benchmark run."""

    bootstrap: str
    registry_url: str
    directory: Path
    partitions: int = 6
    kafka: KafkaSettings = field(init=False)

    def __post_init__(self) -> None:
        self.kafka = KafkaSettings(bootstrap_servers=self.bootstrap)

    def codec(self) -> AvroCodec:
        """A fresh codec (empty caches), as a starting process has."""
        return AvroCodec(ConfluentSchemaRegistry.from_url(self.registry_url))

    @staticmethod
    def fresh_prefix() -> str:
        return f"b{uuid.uuid4().hex[:8]}."

    @staticmethod
    def topics(prefix: str) -> AggregateTopics:
        return aggregate_topics("retail", "store_stock", prefix)

    def create_topics(self, prefix: str) -> None:
        """The store_stock topics of ``prefix``, as the worker creates them."""
        names, n = self.topics(prefix), self.partitions
        specs = [TopicSpec(t, n, 1) for t in (names.commands, names.events, names.state)]
        specs += [TopicSpec(names.results, n, 1), TopicSpec(context_topics("retail", prefix).dlq)]
        specs.append(TopicSpec.compacted(names.changelog, n, 1))
        KafkaAdmin(self.kafka).create_topics(specs)

    def produce(self, prefix: str, commands: list[Command]) -> int:
        """Create the topics of ``prefix``, send ``commands``; return how many are stored."""
        self.create_topics(prefix)
        producer = CommandProducer(self.kafka, self.codec(), retail, topic_prefix=prefix)
        for command in commands:
            producer.send(command)
        producer.flush()
        stored = self.records(self.topics(prefix).commands)
        if stored != len(commands):
            print(
                f"WARNING: {self.topics(prefix).commands} holds {stored} records after a flush "
                f"without error; {len(commands)} were sent",
                flush=True,
            )
        return stored

    def records(self, topic: str) -> int:
        """The records in ``topic`` (the sum of its partitions' end offsets)."""
        with reader(self.kafka) as consumer:
            return sum(watermarks(consumer, topic, p)[1] for p in range(self.partitions))


class TimedMetrics(WorkerMetrics):
    """Worker metrics that also note the first command and the last commit."""

    def __init__(self) -> None:
        super().__init__()
        self.first = 0.0
        self.last = 0.0
        self.committed = 0

    def command(self, aggregate: str, outcome: str, n: int = 1) -> None:
        if not self.first:
            self.first = time.perf_counter()
        super().command(aggregate, outcome, n)

    def batch(self, size: int, commit_seconds: float) -> None:
        super().batch(size, commit_seconds)
        self.committed += size
        self.last = time.perf_counter()

    def timing(self) -> LoopTiming:
        return LoopTiming(self.first, self.last, self.committed)


def run_worker(
    stack: BenchStack,
    prefix: str,
    state_dir: Path,
    total: int,
    exactly_once: bool,
    metrics: TimedMetrics,
) -> None:
    """Run an AggregateWorker of store_stock in this process until ``total`` are committed."""
    spec = TopologySpec(
        name="retail",
        context="topologies.retail.domain:retail",
        aggregates=["store_stock"],
        topics=TopicSettings(partitions=stack.partitions, replication_factor=1),
    )
    settings = WorkerSettings(
        topic_prefix=prefix,
        state_dir=state_dir,
        health_port=-1,
        instance_id="bench",
        exactly_once=exactly_once,
        commit_interval_ms=100,
        max_batch=1000,
    )
    worker = AggregateWorker(spec, retail, settings, stack.kafka, stack.codec(), metrics)
    progress = [0, time.monotonic()]

    def until() -> bool:
        if metrics.committed != progress[0]:
            progress[:] = [metrics.committed, time.monotonic()]
        elif time.monotonic() - progress[1] > 120:
            raise SystemExit(f"the worker stalled at {metrics.committed} of {total} commands")
        return metrics.committed >= total

    worker.run(until=until)


# ---------------------------------------------------------------------- 2. latency


def _start_worker(stack: BenchStack, prefix: str, name: str) -> WorkerProcess:
    (port,) = free_ports(1)
    worker = WorkerProcess(
        TOPOLOGY,
        bootstrap_servers=stack.bootstrap,
        registry_url=stack.registry_url,
        instance_id=name,
        state_dir=stack.directory / f"state-{name}",
        health_port=port,
        log_file=stack.directory / f"worker-{name}.log",
        extra_env={
            "STREAMFOLD_WORKER_TOPIC_PREFIX": prefix,
            "STREAMFOLD_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        },
    )
    worker.start(timeout=600)
    return worker


class ResultWatcher(threading.Thread):
    """Note when each result (keyed by its command id) becomes visible, read_committed."""

    def __init__(self, kafka: KafkaSettings, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, float] = {}
        self._halt = threading.Event()
        self._consumer = Consumer(
            kafka.consumer_config(f"bench-results-{uuid.uuid4().hex}", **{"fetch.wait.max.ms": 5})
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )

    def run(self) -> None:
        while not self._halt.is_set():
            message = self._consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            self.seen.setdefault((message.key() or b"").decode(), time.perf_counter())
        self._consumer.close()

    def wait_for(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(i not in self.seen for i in ids) and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def paced(producer: CommandProducer, commands: list[Command], rate: int) -> dict[str, float]:
    """Send at ``rate`` per second; return each command id's send time."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i, command in enumerate(commands):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        command_id = str(uuid.uuid4())
        sent[command_id] = time.perf_counter()
        producer.send(command, command_id=command_id)
    producer.flush()
    return sent


class _HandwrittenProcess:
    """The hand-written loop (:mod:`handwritten_loop`) as a process, like a worker."""

    def __init__(self, stack: BenchStack, prefix: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "handwritten_loop.py"),
                stack.bootstrap,
                stack.registry_url,
                prefix,
                str(stack.directory / f"state-handwritten-{prefix.strip('.')}"),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.figures: dict[str, float] = {}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self.figures = json.loads(out.strip().splitlines()[-1])


def measure_latency(
    stack: BenchStack,
    rate: int,
    seconds: float,
    aggregates: int,
    profile: bool = False,
    candidate: str = "worker",
) -> tuple[list[float], dict[str, float], list[str]]:
    """Seconds from send to visible result per command at ``rate``/s; figures; profile.

    ``candidate`` is ``worker`` (``streamfold worker``) or ``handwritten`` (the hand-written
    loop as a process, the baseline). The figures: the candidate's RSS (MB), its mean batch
    (commands per transaction) and its mean transaction commit (ms). With ``profile`` (the
    worker only), ten more seconds at the same rate are sampled with py-spy (wall time of the
    worker's main thread).
    """
    prefix = stack.fresh_prefix()
    stack.create_topics(prefix)
    if candidate == "handwritten":
        handwritten = _HandwrittenProcess(stack, prefix)
        try:
            return _measure_latency(stack, prefix, handwritten, rate, seconds, aggregates)
        finally:
            if handwritten.process.poll() is None:
                handwritten.process.kill()
    worker = _start_worker(stack, prefix, "latency")
    watcher = ResultWatcher(stack.kafka, stack.topics(prefix).results, stack.partitions)
    watcher.start()
    try:
        # The client's own batching must not add to what is measured.
        producer = CommandProducer(
            stack.kafka, stack.codec(), retail, topic_prefix=prefix, **{"linger.ms": 0}
        )
        n = int(rate * seconds)
        commands = list(stock_commands(aggregates, WARM_UP + n, seed=11))
        warm = paced(producer, commands[:WARM_UP], rate)
        watcher.wait_for(list(warm), 60)
        sent = paced(producer, commands[WARM_UP:], rate)
        watcher.wait_for(list(sent), 60)
        assert worker.pid is not None
        rss = psutil.Process(worker.pid).memory_info().rss / 2**20
        cpu = psutil.Process(worker.pid).cpu_times()
        metric = lambda name: _metric_sum(worker.health_url, f"streamfold_worker_{name}")  # noqa: E731
        commits = metric("transaction_commit_seconds_count")
        figures = {
            "rss": rss,
            "batch": metric("batch_size_sum") / commits,
            "commit_ms": metric("transaction_commit_seconds_sum") / commits * 1000,
            "cpu_ms_per_command": (cpu.user + cpu.system) * 1000 / len(commands),
        }
        print(f"latency at {rate}/s: {commits:.0f} transactions, {figures}", flush=True)
        lines: list[str] = []
        if profile:
            more = list(stock_commands(aggregates, rate * 10, seed=13))
            lines = profile_summary(
                lambda: watcher.wait_for(list(paced(producer, more, rate)), 60),
                stack.directory,
                "worker.py",
                pid=worker.pid,
                idle=True,
            )
    finally:
        watcher.stop()
        worker.stop()
    return _latencies(watcher, sent, rate, "worker"), figures, lines


def _measure_latency(
    stack: BenchStack,
    prefix: str,
    handwritten: _HandwrittenProcess,
    rate: int,
    seconds: float,
    aggregates: int,
) -> tuple[list[float], dict[str, float], list[str]]:
    """The hand-written loop's side of :func:`measure_latency`, with the same client."""
    watcher = ResultWatcher(stack.kafka, stack.topics(prefix).results, stack.partitions)
    watcher.start()
    try:
        producer = CommandProducer(
            stack.kafka, stack.codec(), retail, topic_prefix=prefix, **{"linger.ms": 0}
        )
        commands = list(stock_commands(aggregates, WARM_UP + int(rate * seconds), seed=11))
        watcher.wait_for(list(paced(producer, commands[:WARM_UP], rate)), 120)
        sent = paced(producer, commands[WARM_UP:], rate)
        watcher.wait_for(list(sent), 60)
        rss = psutil.Process(handwritten.pid).memory_info().rss / 2**20
        cpu = psutil.Process(handwritten.pid).cpu_times()
    finally:
        watcher.stop()
        handwritten.stop()
    done = handwritten.figures
    figures = {
        "rss": rss,
        "batch": done["commands"] / done["transactions"],
        "commit_ms": done["commit_seconds"] / done["transactions"] * 1000,
        "cpu_ms_per_command": (cpu.user + cpu.system) * 1000 / len(commands),
    }
    print(f"latency at {rate}/s (hand-written): {figures}", flush=True)
    return _latencies(watcher, sent, rate, "hand-written"), figures, []


def _latencies(watcher: ResultWatcher, sent: dict[str, float], rate: int, who: str) -> list[float]:
    missing = [i for i in sent if i not in watcher.seen]
    if missing:
        raise SystemExit(f"{who}: {len(missing)} of {len(sent)} results never arrived")
    latencies = [watcher.seen[i] - t for i, t in sent.items()]
    p50 = sorted(latencies)[len(latencies) // 2] * 1000
    print(f"latency at {rate}/s ({who}): p50 {p50:.1f} ms", flush=True)
    return latencies


# ---------------------------------------------------------------------- 3. restore


def fill_changelog(stack: BenchStack, prefix: str, n: int) -> int:
    """Fill ``prefix``'s store_stock changelog with ``n`` entries; return their mean size.

    Each entry is what the worker writes for an aggregate after five commands: its version,
    its state as Avro wire bytes, and the five remembered results.
    """
    stack.create_topics(prefix)
    topics = stack.topics(prefix)
    writer = stack.codec().writer(topics.state, StoreStock, retail.namespace)
    producer = Producer(
        stack.kafka.producer_config(
            **{
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
            }
        )
    )
    rng = random.Random(3)
    kinds = (("SupplyReceived",), ("SaleRecorded",), ("StockAdjusted",))
    size = 0
    for i in range(n):
        store_id, item_id = f"store-{i % 97}", f"item-{i}"
        state = writer.encode_dict(
            {
                "store_id": store_id,
                "item_id": item_id,
                "on_hand": rng.randint(0, 60),
                "sold_amount": Decimal(rng.randint(0, 4000)) / 4,
            }
        )
        recent = tuple(
            (
                str(uuid.UUID(int=rng.getrandbits(128))),
                StoredResult("accepted", v, kinds[v % 3]).pack(),
            )
            for v in range(1, 6)
        )
        value = AggregateEntry(5, False, state, Recent.of(recent)).encode()
        size += len(value)
        key = f"{store_id}/{item_id}".encode()
        while True:
            try:
                producer.produce(topics.changelog, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise SystemExit("the changelog was not acknowledged in time")
    return size // max(1, n)


class _Quiet:
    def restore_progress(self, topic: str, partition: int, restored: int, remaining: int) -> None:
        pass


def measure_restore(stack: BenchStack, changelog: str, n: int) -> float:
    """Records/s of ChangelogRestorer restoring every partition into fresh stores."""
    environment = StoreEnvironment(RocksDBOptions())
    stores = {
        p: PartitionStore(stack.directory / f"restore-{uuid.uuid4().hex[:6]}" / str(p), environment)
        for p in range(stack.partitions)
    }
    restorer = ChangelogRestorer(stack.kafka, _Quiet())
    started = time.perf_counter()
    for partition, store in stores.items():
        restorer.add(changelog, partition, store)
    while restorer.restoring:
        restorer.step(0.05)
    elapsed = time.perf_counter() - started
    restorer.close()
    for store in stores.values():
        store.close()
    return n / elapsed


def measure_raw_consume(stack: BenchStack, changelog: str, n: int) -> float:
    """Records/s of the restorer's own consumer reading the changelog and doing nothing:
    the ceiling of a restore (the same client, settings and batches, no store writes)."""
    restorer = ChangelogRestorer(stack.kafka, _Quiet())
    consumer = restorer._consumer  # the restore's client, as configured
    consumer.assign(
        [TopicPartition(changelog, p, OFFSET_BEGINNING) for p in range(stack.partitions)]
    )
    seen, ended = 0, set()
    started = time.perf_counter()
    while len(ended) < stack.partitions:
        for message in consumer.consume(restorer.batch, 0.05):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
                continue
            _record = (message.key(), message.value())  # as the restore takes them
            seen += 1
    elapsed = time.perf_counter() - started
    restorer.close()
    if seen != n:
        raise SystemExit(f"raw consume read {seen} records, expected {n}")
    return n / elapsed


# ---------------------------------------------------------------------- 4. memory


def _metric_sum(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def measure_rss(stack: BenchStack, prefix: str, n: int, commands: int) -> dict[str, float]:
    """RSS (MB) of a worker process restoring ``n`` aggregates, then processing commands."""
    peak = [0.0]
    stop = threading.Event()
    worker = _start_worker(stack, prefix, "rss")
    assert worker.pid is not None
    process = psutil.Process(worker.pid)

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    url = worker.health_url
    out: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 900
        while _metric_sum(url, "streamfold_worker_restore_records_total") < n:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not restore its state in time")
            time.sleep(0.5)
        time.sleep(2)
        out["after restoring, peak during restore"] = peak[0]
        out["after restoring, settled"] = process.memory_info().rss / 2**20
        producer = CommandProducer(stack.kafka, stack.codec(), retail, topic_prefix=prefix)
        for command in stock_commands(n, commands, seed=5):
            producer.send(command)
        producer.flush()
        while _metric_sum(url, "streamfold_worker_commands_total") < commands:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not process the commands in time")
            time.sleep(0.5)
        time.sleep(2)
        out[f"after processing {commands:,} commands"] = process.memory_info().rss / 2**20
        out["peak over the whole run"] = peak[0]
    finally:
        stop.set()
        sampler.join()
        worker.stop()
    print(f"rss: {out}", flush=True)
    return out


def probe_restore_memory(
    stack: BenchStack, changelog: str, queue_kb: int | None = None
) -> dict[str, float]:
    """RSS (MB) of a bare restore in a fresh interpreter, step by step (see rss_probe.py)."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "rss_probe.py"),
        stack.bootstrap,
        changelog,
        str(stack.partitions),
        str(stack.directory / f"probe-{uuid.uuid4().hex[:6]}"),
    ]
    if queue_kb is not None:
        command += ["--queue-kb", str(queue_kb)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"restore memory (queue {queue_kb} kB): {figures}", flush=True)
    return figures


# ---------------------------------------------------------------------- profile


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:]*)(?::(?P<line>\d+))?\)$")
_RATE = 250
#: py-spy from PATH, else the one installed beside this Python (the bench extra).
_PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
_PROJECT = (
    "runtime/", "state/", "contracts/", "domain/", "retail/", "benchmarks/", "gateway/",
    "transport/", "http/",
)  # fmt: skip


def profile_summary(
    action: Callable[[], Any],
    directory: Path,
    marker: str,
    *,
    pid: int | None = None,
    idle: bool = False,
    top: int = 14,
) -> list[str]:
    """Sample process ``pid`` (this one) with py-spy during ``action``; the hottest functions.

    Only stacks through a file whose path contains ``marker`` count, so the rest of the
    process stays out. Without ``idle``, a thread waiting (in librdkafka, in a sleep) is not
    sampled, so the shares are of CPU time; with it, they are of wall time.
    """
    if not os.access(_PY_SPY, os.X_OK):
        action()  # the run goes on; only its profile is missing
        return [f"No profile: py-spy is not installed ({_PY_SPY}; it is in the bench extra)."]
    raw = directory / f"profile-{uuid.uuid4().hex[:6]}.txt"
    spy = subprocess.Popen(
        [_PY_SPY, "record", "--pid", str(pid or os.getpid()), "--format", "raw",
         "--rate", str(_RATE), "--nonblocking", "-o", str(raw), *(["--idle"] if idle else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    started = time.perf_counter()
    try:
        action()
    finally:
        elapsed = time.perf_counter() - started
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or marker not in stack:
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";")]
        total += count
        own[_name(stack.split(";")[-1], line=True)] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["py-spy took no samples (is ptrace allowed?)."]
    what = "samples, idle ones included," if idle else "samples on the CPU"
    lines = [
        f"{total:,} {what} at {_RATE} Hz in {elapsed:.1f} s "
        f"({total / (_RATE * elapsed):.0%} of the wall time).",
        "",
        "| line (self time: the frame on top) | self |",
        "|---|---:|",
    ]
    lines += [f"| `{frame}` | {count / total:.1%} |" for frame, count in own.most_common(top)]
    lines += ["", "| function (inclusive, project code) | inclusive |", "|---|---:|"]
    ours = [f for f, _ in inclusive.most_common() if f.split("(")[-1].startswith(_PROJECT)]
    lines += [f"| `{f}` | {inclusive[f] / total:.1%} |" for f in ours[:20]]
    return lines


def _name(frame: str, line: bool = False) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    short = "/".join(Path(match.group("file")).parts[-2:])
    if line and match.group("line"):
        short += f":{match.group('line')}"
    return f"{match.group('fn')} ({short})"


def revision() -> str:
    """The commit the code under test came from (``+`` when platform/ had local changes)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    )
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "platform"], check=False, capture_output=True, text=True
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")
