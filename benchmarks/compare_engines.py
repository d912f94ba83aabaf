"""The engines of the side-by-side comparison (``compare_bench.py``), each as a process.

Every engine runs the same work on its own copy of one pre-filled input (the records copied
byte for byte, with their partitions, keys, headers and timestamps, so every engine decides
the same way): per command, decode the Confluent-Avro command, read the aggregate's entry,
decide and fold, write the entry, and produce the event and state records (accepted
commands) and the result record (every command), Avro with the same schemas. Output topics
use ``LogAppendTime``, so a record's timestamp is when the broker appended it.

- ``passthrough``: :func:`handwritten_loop.passthrough` (context: one record copied per
  command, no decoding, no state, no transaction);
- ``handwritten``: :mod:`handwritten_loop`'s exactly-once loop (the ceiling);
- ``streamfold EOS`` / ``streamfold ALO``: ``streamfold worker`` over store_stock,
  exactly-once on / off;
- ``quix EOS`` / ``quix ALO``: ``peers/quix_app.py`` in its own virtualenv;
- ``faust EOS`` / ``faust ALO``: ``peers/faust_app.py`` in its own virtualenv.

``python benchmarks/compare_engines.py passthrough BOOTSTRAP SOURCE OUTPUT GROUP TOTAL`` runs
the raw loop as a process (the harness starts it so).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from topologies.retail.domain import (
    AdjustStock,
    ReceiveSupply,
    RecordSale,
    SaleRecorded,
    StockAdjusted,
    StoreStock,
    SupplyReceived,
    retail,
)

from handwritten_loop import PRODUCER_TUNING, passthrough
from measurements import BenchStack
from streamfold.contracts.codec import Contract
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.naming import AggregateTopics, aggregate_topics, context_topics
from streamfold.embedded.children import die_with_parent
from streamfold.embedded.ports import free_ports
from streamfold.runtime.process import WorkerProcess
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.reading import read_to_end
from streamfold.transport.settings import KafkaSettings

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}
COMMIT_INTERVAL_MS = 100
MAX_BATCH = 1000


@dataclass(frozen=True)
class Engine:
    """One candidate: how it runs and what it writes per command."""

    name: str
    kind: str  # passthrough | floor | handwritten | streamfold | quix | faust
    exactly_once: bool
    guarantee: str
    writes: str


ENGINES = {
    e.name: e
    for e in (
        Engine(
            "passthrough",
            "passthrough",
            False,
            "at-least-once (offsets committed after each flushed batch)",
            "1 record: the command copied unchanged; no decoding, no state",
        ),
        Engine(
            "handwritten",
            "handwritten",
            True,
            "exactly-once (one transaction per batch, offsets in it)",
            "event + state (accepted commands), result (every command); at commit one "
            "changelog record per aggregate touched in the transaction",
        ),
        Engine(
            "floor",
            "floor",
            True,
            "exactly-once (one transaction per batch, offsets in it)",
            "the command's value copied as event, state and result; at commit one changelog "
            "record per key touched in the transaction: the transactions without the work",
        ),
        Engine(
            "streamfold EOS",
            "streamfold",
            True,
            "exactly-once (one transaction per batch, offsets in it)",
            "event + state (accepted commands), result (every command); at commit one "
            "changelog record per aggregate touched in the transaction",
        ),
        Engine(
            "streamfold ALO",
            "streamfold",
            False,
            "at-least-once",
            "as streamfold EOS, without transactions",
        ),
        Engine(
            "quix EOS",
            "quix",
            True,
            "exactly-once (Quix's transactional checkpoint)",
            "event + state (accepted commands), result (every command) through the "
            "checkpoint's producer; at checkpoint Quix's changelog record per key updated "
            "in it",
        ),
        Engine(
            "quix ALO",
            "quix",
            False,
            "at-least-once",
            "as quix EOS, without transactions",
        ),
        Engine(
            "faust EOS",
            "faust",
            True,
            "exactly-once (faust's transactional producer per source partition)",
            "event + state (accepted commands), result (every command); faust's table "
            "changelog record per table write (one per command)",
        ),
        Engine(
            "faust ALO",
            "faust",
            False,
            "at-least-once",
            "as faust EOS, without transactions",
        ),
    )
}


@dataclass(frozen=True)
class PeerEnv:
    """A peer framework's virtualenv, made once under the cache and reused."""

    kind: str
    package: str
    version: str
    requirements: tuple[str, ...]

    def path(self, cache_dir: Path) -> Path:
        return cache_dir / "bench-venvs" / f"{self.package}-{self.version}"


PEER_ENVS = {
    "quix": PeerEnv("quix", "quixstreams", "3.28.1", ("quixstreams==3.28.1", "fastavro==1.13.1")),
    "faust": PeerEnv(
        "faust",
        "faust-streaming",
        "0.15.3",
        # aiokafka reads lz4 (what the others produce) only with cramjam, its lz4 extra.
        (
            "faust-streaming==0.15.3",
            "aiokafka[lz4]==0.14.0",
            "rocksdict==0.3.29",
            "fastavro==1.13.1",
        ),
    ),
}


def ensure_peer_env(peer: PeerEnv, cache_dir: Path) -> Path:
    """The peer's Python interpreter; create its virtualenv and install it when missing."""
    home = peer.path(cache_dir)
    python = home / "bin" / "python"
    stamp = home / ".requirements"
    wanted = "\n".join(peer.requirements)
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        print(f"{peer.package} {peer.version}: reusing the virtualenv {home}", flush=True)
        return python
    print(
        f"{peer.package} {peer.version}: creating the virtualenv {home} (pip install "
        f"{' '.join(peer.requirements)})",
        flush=True,
    )
    home.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *peer.requirements,
        ],
        check=True,
    )
    stamp.write_text(wanted, encoding="utf-8")
    return python


# ---------------------------------------------------------------------- topics and input


def create_topics(stack: BenchStack, prefix: str) -> AggregateTopics:
    """The store_stock topics of ``prefix``; the outputs with LogAppendTime."""
    topics = aggregate_topics("retail", "store_stock", prefix)
    n = stack.partitions
    KafkaAdmin(stack.kafka).create_topics(
        [
            TopicSpec(topics.commands, n, 1),
            *(TopicSpec(t, n, 1, LOG_APPEND) for t in (topics.events, topics.state)),
            TopicSpec(topics.results, n, 1, LOG_APPEND),
            TopicSpec.compacted(topics.changelog, n, 1),
            TopicSpec(context_topics("retail", prefix).dlq),
        ]
    )
    return topics


def copy_input(kafka: KafkaSettings, source: str, target: str) -> int:
    """Copy every record of ``source`` to ``target``: same partition, key, headers, time."""
    producer = Producer(kafka.producer_config(**PRODUCER_TUNING))
    copied = 0
    for message in read_to_end(kafka, source):
        _kind, timestamp = message.timestamp()
        while True:
            try:
                producer.produce(
                    target,
                    message.value(),
                    message.key(),
                    partition=message.partition(),
                    headers=message.headers(),
                    timestamp=timestamp,
                )
                break
            except BufferError:
                producer.poll(0.05)
        copied += 1
    if producer.flush(60):
        raise SystemExit(f"copying {source} to {target}: not acknowledged in time")
    return copied


# ---------------------------------------------------------------------- running an engine


def schemas_for_peers(stack: BenchStack, topics: AggregateTopics) -> dict[str, list[Any]]:
    """Record name → [schema id, schema] for the peers, registered as the worker would."""
    codec = stack.codec()
    ns = retail.namespace
    pairs: list[tuple[str, type[Any], str]] = [
        *((topics.commands, m, ns) for m in (ReceiveSupply, RecordSale, AdjustStock)),
        *((topics.events, m, ns) for m in (SupplyReceived, SaleRecorded, StockAdjusted)),
        (topics.state, StoreStock, ns),
        (topics.results, CommandResult, RESULT_NAMESPACE),
    ]
    out: dict[str, list[Any]] = {}
    for topic, model, namespace in pairs:
        writer = codec.writer(topic, model, namespace)
        out[model.__name__] = [writer.schema_id, Contract.of(model, namespace).schema]
    return out


class RunningEngine:
    """One engine's process on one prefix; its peak RSS sampled while it runs."""

    def __init__(self, stack: BenchStack, engine: Engine, prefix: str, total: int | None) -> None:
        self.stack, self.engine, self.prefix = stack, engine, prefix
        self.topics = aggregate_topics("retail", "store_stock", prefix)
        self.directory = stack.directory / f"{engine.kind}-{prefix.strip('.')}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "engine.log"
        self.total = total
        self.peak_rss = 0.0
        self._worker: WorkerProcess | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._halt = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    @property
    def pid(self) -> int:
        if self._worker is not None:
            assert self._worker.pid is not None
            return self._worker.pid
        assert self._process is not None
        return self._process.pid

    def start(self, python: Path | None = None) -> None:
        kind, stack = self.engine.kind, self.stack
        if kind == "streamfold":
            (port,) = free_ports(1)
            topology = self.directory / "topology.yaml"
            topology.write_text(
                "name: retail\ncontext: topologies.retail.domain:retail\n"
                "aggregates: [store_stock]\n"
                f"topics: {{partitions: {stack.partitions}, replication_factor: 1}}\n"
                f"worker: {{commit_interval_ms: {COMMIT_INTERVAL_MS}, max_batch: {MAX_BATCH}}}\n",
                encoding="utf-8",
            )
            self._worker = WorkerProcess(
                topology,
                bootstrap_servers=stack.bootstrap,
                registry_url=stack.registry_url,
                instance_id="compare",
                state_dir=self.directory / "state",
                health_port=port,
                log_file=self.log,
                extra_env={
                    "STREAMFOLD_WORKER_TOPIC_PREFIX": self.prefix,
                    "STREAMFOLD_WORKER_EXACTLY_ONCE": str(self.engine.exactly_once).lower(),
                    "STREAMFOLD_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(ROOT),
                },
            )
            self._worker.start(timeout=300)
        else:
            self._spawn(self._command(python))
        self._sampler.start()

    def _command(self, python: Path | None) -> list[str]:
        stack, topics, kind = self.stack, self.topics, self.engine.kind
        if kind == "passthrough":
            group = f"{self.prefix}bench.passthrough"
            return [
                sys.executable,
                str(BENCH / "compare_engines.py"),
                "passthrough",
                stack.bootstrap,
                topics.commands,
                topics.events,
                group,
                str(self.total),
            ]
        if kind in ("handwritten", "floor"):
            return [
                sys.executable,
                str(BENCH / "handwritten_loop.py"),
                stack.bootstrap,
                stack.registry_url,
                self.prefix,
                str(self.directory / "state"),
                *(["--floor"] if kind == "floor" else []),
            ]
        assert python is not None, f"{kind} needs its virtualenv's python"
        plan = {
            "bootstrap": stack.bootstrap,
            "group": f"{self.prefix}{kind}",
            "commands": topics.commands,
            "events": topics.events,
            "state": topics.state,
            "results": topics.results,
            "partitions": stack.partitions,
            "state_dir": str(self.directory / "state"),
            "exactly_once": self.engine.exactly_once,
            "commit_interval_ms": COMMIT_INTERVAL_MS,
            "max_batch": MAX_BATCH,
            "schemas": schemas_for_peers(stack, topics),
        }
        path = self.directory / "plan.json"
        path.write_text(json.dumps(plan), encoding="utf-8")
        return [str(python), str(PEERS / f"{kind}_app.py"), str(path)]

    def _spawn(self, command: list[str]) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH)])},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - sets PDEATHSIG only
            )

    def running(self) -> bool:
        if self._worker is not None:
            return self._worker.running()
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _sample(self) -> None:
        try:
            process = psutil.Process(self.pid)
            while not self._halt.is_set():
                rss = process.memory_info().rss
                rss += sum(c.memory_info().rss for c in process.children(recursive=True))
                self.peak_rss = max(self.peak_rss, rss / 2**20)
                time.sleep(0.2)
        except psutil.Error:
            return

    def stop(self) -> None:
        self._halt.set()
        if self._worker is not None:
            self._worker.stop(timeout=60)
        elif self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._sampler.is_alive():
            self._sampler.join()


@contextmanager
def counting(kafka: KafkaSettings, topic: str, partitions: int) -> Iterator[list[int]]:
    """A read_committed count of ``topic``'s records, kept up to date in the background."""
    count = [0]
    halt = threading.Event()
    consumer = Consumer(kafka.consumer_config(f"bench-count-{uuid.uuid4().hex}"))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

    def run() -> None:
        while not halt.is_set():
            messages = consumer.consume(10_000, 0.1)
            count[0] += sum(1 for m in messages if m.error() is None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        halt.set()
        thread.join()
        consumer.close()


class EngineFailed(RuntimeError):
    """An engine stopped or stalled before answering every command."""


def run_to_completion(running: RunningEngine, done_topic: str, total: int, stall_s: float) -> None:
    """Wait until ``done_topic`` holds ``total`` committed records (or fail)."""
    with counting(running.stack.kafka, done_topic, running.stack.partitions) as count:
        last, since = -1, time.monotonic()
        while count[0] < total:
            if count[0] != last:
                last, since = count[0], time.monotonic()
            if not running.running():
                raise EngineFailed(
                    f"{running.engine.name} exited after {count[0]} of {total} outputs:\n"
                    f"{running.log_tail()}"
                )
            if time.monotonic() - since > stall_s:
                raise EngineFailed(
                    f"{running.engine.name} stalled at {count[0]} of {total} outputs for "
                    f"{stall_s:g} s:\n{running.log_tail()}"
                )
            time.sleep(0.2)


# ---------------------------------------------------------------------- what was written


@dataclass
class Outputs:
    """What one engine wrote: counts, LogAppendTime span, and sampled decoded values."""

    counts: dict[str, int] = field(default_factory=dict)
    first_ms: int = 0
    last_ms: int = 0
    log_append_time: bool = True
    outcomes: dict[str, int] = field(default_factory=dict)
    #: command id → the result's fields that do not depend on when it was processed.
    results: dict[str, list[Any]] = field(default_factory=dict)
    #: aggregate id → its events, in order: [type, version, record].
    events: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: aggregate id → its last state record: [version, record].
    states: dict[str, list[Any]] = field(default_factory=dict)


def read_outputs(
    stack: BenchStack,
    topics: list[tuple[str, str]],
    sample_commands: set[str],
    sample_aggregates: set[str],
) -> Outputs:
    """Read each ``(role, topic)`` whole (read_committed); decode the sampled records."""
    reader = stack.codec().reader()
    out = Outputs(first_ms=2**63)
    for role, topic in topics:
        count = 0
        for message in read_to_end(stack.kafka, topic, timeout=60):
            count += 1
            kind, timestamp = message.timestamp()
            out.log_append_time &= kind == 2  # TIMESTAMP_LOG_APPEND_TIME
            out.first_ms = min(out.first_ms, timestamp)
            out.last_ms = max(out.last_ms, timestamp)
            key = (message.key() or b"").decode()
            if role == "results":
                value = message.value() or b""
                if key in sample_commands:
                    record = reader.decode_dict(value)[1]
                    out.results[key] = [record[f] for f in _RESULT_FIELDS]
                    outcome = record["outcome"]
                else:
                    # The outcome is the 6th field; decoding only for the count is cheap.
                    outcome = reader.decode_dict(value)[1]["outcome"]
                out.outcomes[outcome] = out.outcomes.get(outcome, 0) + 1
            elif key in sample_aggregates and role in ("events", "state"):
                headers = {k: v for k, v in message.headers() or ()}
                version = int(headers.get("aggregate_version", b"0"))
                record = _plain(reader.decode_dict(message.value() or b"")[1])
                if role == "events":
                    kind_name = (headers.get("message_type") or b"").decode()
                    out.events.setdefault(key, []).append([kind_name, version, record])
                else:
                    out.states[key] = [version, record]
        out.counts[role] = count
    return out


_RESULT_FIELDS = (
    "aggregate_id",
    "command_type",
    "outcome",
    "version",
    "event_types",
    "code",
    "message",
    "duplicate",
)


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-able values (decimals and times as text) for comparing and storing."""
    return {
        k: v if isinstance(v, str | int | float | bool | None) else str(v)
        for k, v in record.items()
    }


def main() -> None:
    """The raw loop as a process: ``passthrough BOOTSTRAP SOURCE OUTPUT GROUP TOTAL``."""
    what, bootstrap, source, output, group, total = sys.argv[1:7]
    if what != "passthrough":
        raise SystemExit(f"unknown loop {what!r}")
    passthrough(KafkaSettings(bootstrap_servers=bootstrap), source, output, group, int(total))


if __name__ == "__main__":
    main()
