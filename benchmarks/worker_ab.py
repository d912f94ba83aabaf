"""The worker's exactly-once throughput at two revisions of streamfold, interleaved.

Run: ``python benchmarks/worker_ab.py BASE [CANDIDATE] [--commands N] [--aggregates N]
[--rounds 3]`` from the repository root. ``BASE`` and ``CANDIDATE`` are git revisions
(``CANDIDATE`` defaults to the working tree). Each revision is checked out into a scratch
worktree; one broker and one schema registry serve both. Every round preloads the same
``store_stock`` commands into a fresh topic prefix per revision, then runs the
:class:`~streamfold.runtime.worker.AggregateWorker` of each revision (exactly-once on, in a
child process of its own whose ``streamfold`` is that revision's) over them, alternating
which goes first. A rate is commands over the time from the first command processed to the
last commit, as in ``worker_bench.py``. The report, rewritten after every round, goes to
``benchmarks/reports/worker_ab.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "reports" / "worker_ab.md"


def child(args: argparse.Namespace) -> None:
    """Run one revision's worker over a preloaded prefix; print its rate as JSON."""
    # Only names that every revision has: this runs with another revision's package.
    from topologies.retail.domain import retail  # noqa: PLC0415

    from streamfold.contracts.codec import AvroCodec  # noqa: PLC0415
    from streamfold.contracts.registry import ConfluentSchemaRegistry  # noqa: PLC0415
    from streamfold.observability.logging import configure_logging  # noqa: PLC0415
    from streamfold.observability.metrics import WorkerMetrics  # noqa: PLC0415
    from streamfold.runtime.settings import WorkerSettings  # noqa: PLC0415
    from streamfold.runtime.topology import TopicSettings, TopologySpec  # noqa: PLC0415
    from streamfold.runtime.worker import AggregateWorker  # noqa: PLC0415
    from streamfold.transport.settings import KafkaSettings  # noqa: PLC0415

    configure_logging("console", "WARNING")

    class Timed(WorkerMetrics):
        first = last = 0.0
        committed = 0

        def command(self, aggregate: str, outcome: str, n: int = 1) -> None:
            if not self.first:
                self.first = time.perf_counter()
            super().command(aggregate, outcome, n)

        def batch(self, size: int, commit_seconds: float) -> None:
            super().batch(size, commit_seconds)
            self.committed += size
            self.last = time.perf_counter()

    metrics = Timed()
    spec = TopologySpec(
        name="retail",
        context="topologies.retail.domain:retail",
        aggregates=["store_stock"],
        topics=TopicSettings(partitions=args.partitions, replication_factor=1),
    )
    settings = WorkerSettings(
        topic_prefix=args.prefix,
        state_dir=Path(args.state_dir),
        health_port=-1,
        instance_id="ab",
        commit_interval_ms=100,
        max_batch=1000,
    )
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(args.registry))
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    worker = AggregateWorker(spec, retail, settings, kafka, codec, metrics)
    worker.run(until=lambda: metrics.committed >= args.commands)
    rate = metrics.committed / (metrics.last - metrics.first)
    print(json.dumps({"rate": rate, "committed": metrics.committed}))


def _worktree(revision: str, directory: Path) -> Path:
    """A checkout of ``revision`` (or the working tree itself for ``.``)."""
    if revision == ".":
        return ROOT
    target = directory / revision.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), revision],
        check=True,
        capture_output=True,
    )
    return target


def _write(rates: dict[str, list[float]], names: dict[str, str], args: argparse.Namespace) -> None:
    lines = [
        "# Worker exactly-once throughput, two revisions interleaved",
        "",
        f"`python benchmarks/worker_ab.py {args.base} {args.candidate}` "
        f"(commands {args.commands}, aggregates {args.aggregates}, rounds {args.rounds}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| revision | rounds (commands/s) | best | median |",
        "|---|---|---|---|",
    ]
    for label, values in rates.items():
        if values:
            rounds = ", ".join(f"{v:,.0f}" for v in values)
            best, median = max(values), statistics.median(values)
            lines.append(f"| {names[label]} | {rounds} | {best:,.0f} | {median:,.0f} |")
    base, candidate = rates["base"], rates["candidate"]
    if base and candidate:
        ratio = max(candidate) / max(base)
        pairs = ", ".join(f"{c / b:.2f}" for b, c in zip(base, candidate, strict=False))
        lines += [
            "",
            f"Candidate / base, best of each: **{ratio:.3f}**; round by round: {pairs}.",
        ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")


def parent(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from topologies.retail.workload import stock_commands  # noqa: PLC0415

    from streamfold.cli.edge import default_cache_dir  # noqa: PLC0415
    from streamfold.embedded.kafka import LocalKafkaCluster  # noqa: PLC0415
    from streamfold.embedded.ports import free_ports  # noqa: PLC0415
    from streamfold.observability.logging import configure_logging  # noqa: PLC0415
    from streamfold.registry.server import RegistryProcess  # noqa: PLC0415

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from measurements import BenchStack  # noqa: PLC0415

    configure_logging("console", "WARNING")

    scratch = Path(tempfile.mkdtemp(prefix="worker-ab-"))
    trees = {"base": _worktree(args.base, scratch), "candidate": _worktree(args.candidate, scratch)}
    names = {"base": args.base, "candidate": args.candidate}
    commands = list(stock_commands(args.aggregates, args.commands, 7))
    rates: dict[str, list[float]] = {"base": [], "candidate": []}
    try:
        with LocalKafkaCluster(scratch / "kafka", default_cache_dir()) as cluster:
            (port,) = free_ports(1)
            registry = RegistryProcess(
                cluster.bootstrap_servers, port, log_file=scratch / "registry.log"
            )
            registry.start()
            stack = BenchStack(cluster.bootstrap_servers, registry.url, scratch, args.partitions)
            for round_ in range(args.rounds):
                order = ["base", "candidate"] if round_ % 2 == 0 else ["candidate", "base"]
                for label in order:
                    prefix = stack.fresh_prefix()
                    stack.produce(prefix, commands)
                    tree = trees[label]
                    env = {
                        **os.environ,
                        "PYTHONPATH": f"{tree / 'platform'}{os.pathsep}{tree}",
                    }
                    out = subprocess.run(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--child",
                            "--prefix",
                            prefix,
                            "--bootstrap",
                            cluster.bootstrap_servers,
                            "--registry",
                            registry.url,
                            "--state-dir",
                            str(scratch / f"state-{prefix}"),
                            "--commands",
                            str(args.commands),
                            "--partitions",
                            str(args.partitions),
                        ],
                        env=env,
                        cwd=tree,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    rate = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
                    rates[label].append(rate)
                    print(f"round {round_ + 1} {names[label]}: {rate:,.0f} commands/s", flush=True)
                    _write(rates, names, args)
            registry.stop()
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base", nargs="?", default="HEAD")
    parser.add_argument("candidate", nargs="?", default=".")
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--aggregates", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
