"""The soak: a local retail stack under mixed load and periodic faults for ``--minutes``.

``scripts/soak [--minutes N]`` runs it (``python -m tests.fault.soak``). It starts one
broker (streamfold.embedded), the registry, two workers of ``stock-only.yaml``, a chDB sink
and the gateway, the same classes the fault tests use (``tests/fault/stack.py``); sends
suppliers', catalogue and store-stock commands straight to Kafka and through the gateway
with PROJECTED waits; every ``--fault-every`` seconds SIGKILLs a worker or the sink (and
restarts it) or makes ClickHouse unavailable for ``--outage`` seconds, in turn; samples each
process's RSS and open files (``/proc/<pid>``) and the workers' and the sink's consumer lag
every ``--sample-every`` seconds; and at the end checks the invariants of the fault tests.

The report (``--report``, ``benchmarks/reports/soak.md`` by default) is written again after
every sample and fault, so a long run that dies never loses what it measured. Exit status
0 when every invariant holds, 1 when one does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from topologies.retail.domain import retail

from streamfold.cli.edge import default_cache_dir
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain.naming import aggregate_topics
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.registry.server import RegistryProcess
from streamfold.transport.commands import CommandProducer
from streamfold.transport.settings import KafkaSettings
from tests.fault.stack import (
    AGGREGATES,
    PARTITIONS,
    SINK_TOPIC_ENDS,
    Invariants,
    RetailStack,
    SteadyLoad,
    median,
    worker_group,
)
from tests.fault.watch import longest_gap
from tests.integration.runtime.conftest import RetailRun

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "reports" / "soak.md"
PATIENCE = 900.0
STALL_WINDOW = 60.0
#: What a worker logs when it was fenced and rejoins with a new producer (runtime/worker.py).
REJOINED = "the worker was fenced; rejoining with a new producer"
FAULTS = ("worker", "sink", "outage", "worker", "sink")


@dataclass
class Fault:
    what: str
    at: float  # monotonic
    inside: bool
    evidence: str  # what "inside" means for this fault
    story: str = ""  # what happened meanwhile (an outage's)
    results_stall: float = -1.0  # measured while the watcher runs, kept for the end
    projected_stall: float = -1.0


@dataclass
class Soak:
    """One soak run: its stack, load, faults, samples and report."""

    stack: RetailStack
    load: SteadyLoad
    pids: dict[str, int | None]
    minutes: float
    report: Path
    started: float = field(default_factory=time.monotonic)
    faults: list[Fault] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    outcome: str = "running"

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    # -- faults ------------------------------------------------------------------------

    def fault(self, what: str, outage: float) -> None:
        at = time.monotonic()
        if what == "worker":
            victim = self.stack.workers[len(self.faults) % len(self.stack.workers)]
            inside = self.stack.kill_worker(victim)
            fault = Fault(f"SIGKILL worker {victim.instance_id}", at, inside, "open transaction")
        elif what == "sink":
            fault = Fault("SIGKILL sink", at, self.stack.kill_sink(), "unfinished batch")
        else:
            happened = self.stack.outage(outage, self.load)
            fault = Fault(
                "SIGKILL sink, ClickHouse away",
                happened.started,
                happened.inside,
                "unfinished batch",
                happened.describe(),
            )
        self.faults.append(fault)

    # -- samples -----------------------------------------------------------------------

    def sample(self) -> None:
        self.pids.update(
            {"sink": self.stack.sink.pid, "gateway": self.stack.gateway.pid}
            | {f"worker {w.instance_id}": w.pid for w in self.stack.workers}
        )
        cells = [self.elapsed()]
        for name in sorted(self.pids):
            rss, fds = process_use(self.pids[name])
            cells.append(f"{rss:.0f} MB / {fds}" if rss >= 0 else "-")
        run = self.stack.run
        commands = [aggregate_topics("retail", a, run.prefix).commands for a in AGGREGATES]
        sink_topics = [t for t in self.stack.sink_topics() if t.endswith(SINK_TOPIC_ENDS)]
        cells.append(f"{lag(run.settings, worker_group(run), commands):,}")
        cells.append(f"{lag(run.settings, self.stack.spec.group_id, sink_topics):,}")
        cells.append(f"{self.load.commands:,}")
        self.columns = ["time", *sorted(self.pids), "worker lag", "sink lag", "commands sent"]
        self.samples.append("| " + " | ".join(cells) + " |")

    def rejoins(self) -> list[str]:
        """Each time a worker was fenced and rejoined (a hung transactional call among
        them), from the workers' JSON logs: when, which worker and why."""
        found: list[tuple[str, str]] = []
        for worker in self.stack.workers:
            log_file = worker.log_file
            if log_file is None or not log_file.exists():
                continue
            with log_file.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if REJOINED not in line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a SIGKILL
                    found.append(
                        (
                            str(record.get("timestamp", ""))[11:19],
                            f"{worker.instance_id}: {str(record.get('error', ''))[:160]}",
                        )
                    )
        return [f"{at} UTC, {what}" for at, what in sorted(found)]

    # -- the report ----------------------------------------------------------------------

    def write(self, found: Invariants | None = None) -> None:
        now = time.monotonic()
        lines = [
            "# Soak",
            "",
            f"_{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {self.outcome}, after"
            f" {self.elapsed()} of {self.minutes:g} minutes_",
            "",
            "`scripts/soak` (tests/fault/soak.py): one broker, the registry, 2 workers of"
            " `stock-only.yaml`, a chDB sink and the gateway; suppliers', catalogue and"
            " store-stock commands at about 200/s straight to Kafka and a few a second through"
            " the gateway with PROJECTED waits; a fault every few minutes.",
            "",
            "## Faults",
            "",
            "Stall: the longest gap between results (and between PROJECTED answers at the"
            f" gateway) in the {STALL_WINDOW:.0f} s after the fault.",
            "",
            "| at | fault | inside | results stall | PROJECTED stall |",
            "|---|---|---|---|---|",
        ]
        answers = self.load.answered_200()
        for fault in self.faults:
            window = min(STALL_WINDOW, now - fault.at)
            if self.stack.watcher is not None:
                fault.results_stall = self.stack.results_stall(fault.at, window)
                fault.projected_stall = longest_gap(answers, fault.at, window)
            since = int(fault.at - self.started)
            inside = f"{'yes' if fault.inside else 'no'} ({fault.evidence})"
            lines.append(
                f"| {since // 60:02d}:{since % 60:02d} | {fault.what} | {inside}"
                f" | {fault.results_stall:.2f} s | {fault.projected_stall:.2f} s |"
            )
        stalls = [f.results_stall for f in self.faults if f.results_stall >= 0]
        if stalls:
            lines.append(
                f"\nResults stall: max {max(stalls):.2f} s, median {median(stalls):.2f} s."
            )
        lines += [f"\n{f.story}" for f in self.faults if f.story]
        rejoins = self.rejoins()
        lines += [
            "",
            f"Workers fenced and rejoined with a new producer: {len(rejoins)}"
            + ("." if not rejoins else ":"),
            *[f"- {line}" for line in rejoins],
        ]
        lines += [
            "",
            "## Resources",
            "",
            "Per process: RSS / open files (`/proc/<pid>/fd`); consumer lag: records not yet"
            " committed by the workers' group (command topics) and the sink's group.",
            "",
        ]
        if self.columns:
            lines += [
                "| " + " | ".join(self.columns) + " |",
                "|" + "---|" * len(self.columns),
                *self.samples,
            ]
        if found is not None:
            lines += ["", "## Invariants at the end", "", *invariant_lines(found, self.load)]
        self.report.parent.mkdir(parents=True, exist_ok=True)
        self.report.write_text("\n".join(lines) + "\n", encoding="utf-8")


def invariant_lines(found: Invariants, load: SteadyLoad) -> list[str]:
    problems = found.problems()
    lines = [
        f"- {'every invariant holds' if not problems else f'{len(problems)} problems'}",
        *[f"  - {p}" for p in problems[:20]],
    ]
    for aggregate, report in found.reports.items():
        lines.append(
            f"- {aggregate}: {len(load.sent[aggregate]):,} commands, {report.results:,} results"
            f" ({dict(report.outcomes)}), {report.events:,} events over {report.aggregates:,}"
            " aggregates, versions contiguous and state = fold"
            + ("" if not report.problems else " **NOT**")
        )
    lines += [
        f"- ClickHouse: {found.rows:,} store-stock event rows, {found.unique:,} distinct"
        f" (events: {found.events:,})",
        f"- PROJECTED waits: {sum(s == '200' for s in load.projected.values())} answered,"
        f" {found.late} answered 202 and found projected later; {len(load.retried)} sent"
        " again with the same id after a 503 or no answer",
    ]
    return lines


def process_use(pid: int | None) -> tuple[float, int]:
    """RSS in MB and open file descriptors of ``pid`` (-1, -1 when it is gone)."""
    if pid is None:
        return -1.0, -1
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1.0, -1
    rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), "0")
    return int(rss) / 1024, fds


def lag(settings: KafkaSettings, group: str, topics: list[str]) -> int:
    """Records in ``topics`` past the committed offsets of ``group``."""
    consumer = Consumer(settings.consumer_config(group))  # never joins the group
    try:
        wanted = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        behind = 0
        for tp in consumer.committed(wanted, timeout=30):
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            behind += max(0, high - max(tp.offset, 0))
        return behind
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the load runs")
    parser.add_argument(
        "--fault-every",
        type=float,
        default=240.0,
        help="seconds between faults (at most a quarter of the run)",
    )
    parser.add_argument("--outage", type=float, default=60.0, help="seconds ClickHouse is away")
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--dir", type=Path, help="data and logs (default: a fresh temp dir)")
    args = parser.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="streamfold-soak-"))
    directory.mkdir(parents=True, exist_ok=True)
    every = min(args.fault_every, max(30.0, args.minutes * 60 / 4))
    outage = min(args.outage, every / 2)
    print(f"soak: {args.minutes:g} min, a fault every {every:.0f} s; data and logs in {directory}")
    with LocalKafkaCluster(directory / "kafka", default_cache_dir()) as cluster:
        settings = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
        (registry_port,) = free_ports(1)
        registry = RegistryProcess(
            cluster.bootstrap_servers, registry_port, log_file=directory / "registry.log"
        )
        registry.start(timeout=120)
        codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry.url))
        prefix = f"s{uuid.uuid4().hex[:8]}."
        producer = CommandProducer(settings, codec, retail, topic_prefix=prefix)
        run = RetailRun(settings, registry.url, prefix, codec, producer, directory, [])
        stack = RetailStack(run, directory)
        load = SteadyLoad(stack, mixed=True)
        pids = {"broker": cluster.nodes[0].pid, "registry": registry.pid}
        soak = Soak(stack, load, pids, args.minutes, args.report)
        found: Invariants | None = None
        try:
            stack.start()
            load.start()
            soak.started = time.monotonic()
            end = soak.started + args.minutes * 60
            next_fault, next_sample = soak.started + every, soak.started
            while time.monotonic() < end:
                if load.failures:
                    raise RuntimeError(f"the load failed: {load.failures[:3]}")
                if time.monotonic() >= next_sample:
                    soak.sample()
                    soak.write()
                    next_sample += args.sample_every
                if time.monotonic() >= next_fault and time.monotonic() < end - 20:
                    what = FAULTS[len(soak.faults) % len(FAULTS)]
                    print(f"soak {soak.elapsed()}: {what}")
                    soak.fault(what, outage)
                    soak.write()
                    next_fault = time.monotonic() + every
                time.sleep(0.5)
            soak.sample()
            load.stop()
            soak.outcome = "load stopped, checking"
            soak.write()
            found = stack.check(load, PATIENCE)
            soak.outcome = "passed" if not found.problems() else "FAILED"
        except BaseException as exc:
            soak.outcome = f"FAILED: {type(exc).__name__}: {str(exc)[:300]}"
            raise
        finally:
            load.stop()
            soak.write(found)
            stack.stop()
            registry.stop()
            producer.close()
    print(f"soak: {soak.outcome}; report: {args.report}")
    return 0 if soak.outcome == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
