"""The aggregate worker against hand-written baselines: throughput, latency, restore, memory.

Run: ``python benchmarks/worker_bench.py [--commands N] [--aggregates N] [--partitions 6]
[--rounds 2] [--state N] [--quick] [--report PATH]`` from the repository root. It starts its
own single-node Kafka (the fetched jars) and one schema registry process, then measures in
the same run, so that every figure is a ratio against a baseline measured beside it on this
noisy machine:

1. throughput, commands/s, each candidate on the same preloaded input (``store_stock``
   commands of :func:`topologies.retail.workload.stock_commands`, produced once into the
   candidate's own topic prefix, so each starts from an empty store and a fresh group):
   (a) a raw consume→produce loop (context), (b) the hand-written exactly-once loop of
   :mod:`handwritten_loop` (the baseline: the worker must reach 80 % of it), (c) the
   :class:`~streamfold.runtime.worker.AggregateWorker` in this process with exactly-once on
   and (d) off. (b)-(d) run interleaved ``--rounds`` times; the best rate counts. A rate is
   commands over the time from the first command processed to the last commit;
2. latency with exactly-once on: a worker process (``streamfold worker``) answering commands
   sent at a steady 1,000/s (and 200/s); per command, the time from the client's send to the
   client's ``read_committed`` consumer seeing its result (target p99 at most 50 ms), next to
   the hand-written loop run as a process with the same client, in interleaved rounds after
   a discarded warm-up (``--latency-rounds``);
3. restore: a changelog of realistic entries restored by
   :class:`~streamfold.state.restore.ChangelogRestorer` into fresh stores (target at least
   200k records/s);
4. the RSS of a worker process holding that state after its restore and after processing
   commands (target at most 250 MB).

Where the worker misses the throughput target, one more exactly-once run is sampled with
py-spy and the report lists where its time goes. ``--quick`` scales everything down for a
smoke run (``tests/integration/bench/test_worker_bench.py`` runs it smaller still). The
report goes to ``benchmarks/reports/worker.md`` unless ``--report`` names another file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topologies.retail.workload import stock_commands

from handwritten_loop import LoopTiming, handwritten_eos, passthrough
from measurements import (
    ROOT,
    BenchStack,
    TimedMetrics,
    fill_changelog,
    measure_latency,
    measure_raw_consume,
    measure_restore,
    measure_rss,
    probe_restore_memory,
    profile_summary,
    revision,
    run_worker,
)
from streamfold.cli.edge import default_cache_dir
from streamfold.domain import Command
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.observability.logging import configure_logging
from streamfold.registry.server import RegistryProcess

REPORT = Path(__file__).resolve().parent / "reports" / "worker.md"
CANDIDATES = ("handwritten", "worker EOS on", "worker EOS off")
LABELS = {
    "passthrough": "(a) raw consume→produce, no transaction (context)",
    "handwritten": "(b) hand-written exactly-once loop (baseline)",
    "worker EOS on": "(c) AggregateWorker, exactly-once",
    "worker EOS off": "(d) AggregateWorker, at-least-once",
}
QUANTILES = (0.5, 0.95, 0.99)


def throughput(
    stack: BenchStack, commands: list[Command], rounds: int, profile: bool
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Rates (commands/s) of every candidate, per round; and profiles if they were taken."""
    plan = [("passthrough", 0)] + [(name, r) for r in range(rounds) for name in CANDIDATES]
    inputs = {}
    for name, r in plan:
        prefix = stack.fresh_prefix()
        inputs[(name, r)] = (prefix, stack.produce(prefix, commands))
    print(f"input ready: {len(commands)} commands x {len(plan)} candidates", flush=True)
    rates: dict[str, list[float]] = {}
    for name, r in plan:
        prefix, total = inputs[(name, r)]
        timing = _run_candidate(stack, name, prefix, total)
        rates.setdefault(name, []).append(timing.rate)
        print(f"round {r + 1}: {name}: {timing.rate:,.0f} commands/s", flush=True)
    profiles: dict[str, list[str]] = {}
    best = {name: max(values) for name, values in rates.items()}
    if profile or best["worker EOS on"] < 0.8 * best["handwritten"]:
        for name, marker in (
            ("handwritten", "handwritten_loop.py"),
            ("worker EOS on", "worker.py"),
        ):
            prefix = stack.fresh_prefix()
            total = stack.produce(prefix, commands)
            profiles[name] = profile_summary(
                lambda name=name, prefix=prefix, total=total: _run_candidate(
                    stack, name, prefix, total
                ),
                stack.directory,
                marker,
            )
    return rates, profiles


LATENCY_CANDIDATES = ("worker", "handwritten")
Latencies = dict[tuple[int, str], list[tuple[list[float], dict[str, float]]]]


def latency(stack: BenchStack, args: argparse.Namespace) -> Latencies:
    """Each rate: a discarded warm-up of each candidate, then interleaved rounds."""
    measured: Latencies = {}
    for rate in (args.latency_rate, args.latency_rate // 5):
        for candidate in LATENCY_CANDIDATES:
            measure_latency(stack, rate, 3.0, args.aggregates, candidate=candidate)
        for _ in range(args.latency_rounds):
            for candidate in LATENCY_CANDIDATES:
                values, figures, _lines = measure_latency(
                    stack, rate, args.latency_seconds, args.aggregates, candidate=candidate
                )
                measured.setdefault((rate, candidate), []).append((values, figures))
    return measured


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _median_p99(latencies: Latencies, rate: int, candidate: str) -> float:
    return statistics.median(_quantile(v, 0.99) for v, _ in latencies[(rate, candidate)])


def _run_candidate(stack: BenchStack, name: str, prefix: str, total: int) -> LoopTiming:
    state_dir = stack.directory / f"state-{prefix.strip('.')}"
    if name == "passthrough":
        topics = stack.topics(prefix)
        group = f"{prefix}bench.passthrough"
        return passthrough(stack.kafka, topics.commands, topics.events, group, total)
    if name == "handwritten":
        return handwritten_eos(stack.kafka, stack.codec(), prefix, state_dir, total)
    metrics = TimedMetrics()
    run_worker(stack, prefix, state_dir, total, name == "worker EOS on", metrics)
    return metrics.timing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--aggregates", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (b)-(d)")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-rate", type=int, default=1000, help="commands/s")
    parser.add_argument("--latency-rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--state", type=int, default=1_000_000, help="aggregates for 3 and 4")
    parser.add_argument("--profile", action="store_true", help="profile the worker anyway")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--report", type=Path, default=REPORT, help="where the report goes")
    args = parser.parse_args()
    if args.quick:
        args.commands, args.aggregates = min(args.commands, 10_000), min(args.aggregates, 2_000)
        args.rounds, args.latency_seconds, args.state = 1, 5.0, min(args.state, 100_000)
        args.latency_rounds = 1
    configure_logging("console", "WARNING")
    started = time.strftime("%Y-%m-%d %H:%M")
    commands = list(stock_commands(args.aggregates, args.commands))
    with (
        tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp,
        LocalKafkaCluster(Path(tmp) / "kafka", default_cache_dir()) as kafka,
    ):
        (port,) = free_ports(1)
        with RegistryProcess(kafka.bootstrap_servers, port, log_file=Path(tmp) / "registry.log"):
            stack = BenchStack(kafka.bootstrap_servers, f"http://127.0.0.1:{port}", Path(tmp))
            stack.partitions = args.partitions
            rates, profiles = throughput(stack, commands, args.rounds, args.profile)
            latencies = latency(stack, args)
            worker_p99 = _median_p99(latencies, args.latency_rate, "worker")
            if args.profile or worker_p99 > 50:
                profiles["latency"] = measure_latency(
                    stack, args.latency_rate, 2.0, args.aggregates, profile=True
                )[2]
            prefix = stack.fresh_prefix()
            changelog = stack.topics(prefix).changelog
            entry_size = fill_changelog(stack, prefix, args.state)
            print(f"changelog filled: {args.state} entries of ~{entry_size} B", flush=True)
            # Interleaved with its ceiling: the restore's consumer reading alone.
            restores, raws = [], []
            for _ in range(2):
                restores.append(measure_restore(stack, changelog, args.state))
                raws.append(measure_raw_consume(stack, changelog, args.state))
            restore_rate, raw_rate = max(restores), max(raws)
            print(f"restore: {restore_rate:,.0f} records/s, raw {raw_rate:,.0f}", flush=True)
            if args.profile or restore_rate < 200_000:
                profiles["restore"] = profile_summary(
                    lambda: measure_restore(stack, changelog, args.state),
                    stack.directory,
                    "restore.py",
                )
            rss = measure_rss(stack, prefix, args.state, min(20_000, args.commands))
            probes = {
                "restore consumer as configured": probe_restore_memory(stack, changelog),
                "its prefetch (queued.max.messages.kbytes) at 64 MiB": probe_restore_memory(
                    stack, changelog, 64 * 1024
                ),
            }
    measured = Figures(rates, profiles, latencies, (restores, raws), entry_size, rss, probes)
    report = render(args, started, measured)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report, encoding="utf-8")
    print(report)


@dataclass
class Figures:
    """Everything one run measured."""

    rates: dict[str, list[float]]
    profiles: dict[str, list[str]]
    latencies: Latencies
    restore_rates: tuple[list[float], list[float]]  # the restores, the raw consumes
    entry_size: int
    rss: dict[str, float]
    probes: dict[str, dict[str, float]]


def render(args: argparse.Namespace, started: str, measured: Figures) -> str:
    """The markdown report."""
    rates, profiles, latencies = measured.rates, measured.profiles, measured.latencies
    (restores, raws), entry_size = measured.restore_rates, measured.entry_size
    restore_rate, raw_rate = max(restores), max(raws)
    rss, probes = measured.rss, measured.probes
    best = {name: max(values) for name, values in rates.items()}
    hand, eos, alo = best["handwritten"], best["worker EOS on"], best["worker EOS off"]
    raw = best["passthrough"]
    command = " ".join(["python benchmarks/worker_bench.py", *sys.argv[1:]])
    lines = [
        "# Aggregate worker: throughput, latency, restore, memory",
        "",
        f"`{command}`, {started} UTC, at commit {revision()}. Machine: {os.cpu_count()} "
        "cores shared with other work on the machine, one single-node local Kafka broker "
        "(KRaft) and one "
        "registry process on the same machine. Every figure is compared with a baseline "
        "measured in the same run.",
        "",
        f"## 1. Throughput ({args.commands:,} store_stock commands over {args.aggregates:,} "
        f"aggregates, {args.partitions} partitions; best of {args.rounds} interleaved rounds)",
        "",
        "| candidate | commands/s (best) | each round | vs (b) |",
        "|---|---:|---|---:|",
    ]
    for name in ("passthrough", *CANDIDATES):
        each = ", ".join(f"{r:,.0f}" for r in rates[name])
        lines.append(f"| {LABELS[name]} | {best[name]:,.0f} | {each} | {best[name] / hand:.0%} |")
    lines += [
        "",
        f"c/b = **{eos / hand:.0%}** (target ≥ 80 %: {_met(eos >= 0.8 * hand)}); "
        f"d/b = {alo / hand:.0%}; c/a = {eos / raw:.0%}.",
        "",
        f"## 2. Latency, exactly-once ({args.latency_seconds:g} s per round; a discarded "
        "warm-up round, then interleaved rounds)",
        "",
        "From the client's send to its read_committed consumer seeing the result, per command. "
        "Candidates, each a process of its own beside the same client: the worker "
        "(`streamfold worker`) and, as the baseline, the hand-written exactly-once loop "
        "(`benchmarks/handwritten_loop.py`, same commit rules).",
        "",
        "| offered /s | candidate | round | p50 ms | p95 ms | p99 ms | max ms | commands per "
        "transaction | commit ms (mean) | RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (rate, candidate), rounds in latencies.items():
        for index, (values, figures) in enumerate(rounds, 1):
            pct = [_quantile(values, q) for q in QUANTILES]
            cells = " | ".join(f"{v:,.1f}" for v in (*pct, max(values) * 1000))
            more = f"{figures['batch']:.1f} | {figures['commit_ms']:.1f} | {figures['rss']:,.0f}"
            lines.append(f"| {rate:,} | {candidate} | {index} | {cells} | {more} |")
    lines.append("")
    for rate in sorted({rate for rate, _ in latencies}, reverse=True):
        mine = _median_p99(latencies, rate, "worker")
        baseline = _median_p99(latencies, rate, "handwritten")
        lines.append(
            f"- {rate:,}/s, median of the rounds' p99: worker {mine:,.1f} ms, hand-written "
            f"{baseline:,.1f} ms (worker/baseline {mine / baseline:.2f})."
        )
    p99 = _median_p99(latencies, args.latency_rate, "worker")
    lines += [
        "",
        f"p99 at {args.latency_rate:,}/s: {p99:,.1f} ms (target ≤ 50 ms: {_met(p99 <= 50)}).",
        "",
        f"## 3. Restore ({args.state:,} changelog entries of ~{entry_size} bytes, "
        f"{args.partitions} partitions)",
        "",
        f"ChangelogRestorer into fresh PartitionStores: **{restore_rate:,.0f} records/s** "
        f"(target ≥ 200k/s: {_met(restore_rate >= 200_000)}); each round "
        + ", ".join(f"{r:,.0f}" for r in restores)
        + ".",
        "",
        f"Its ceiling, the restore's own consumer reading the same changelog with nothing "
        f"else to do (same settings and batches): {raw_rate:,.0f} records/s; each round "
        + ", ".join(f"{r:,.0f}" for r in raws)
        + f". Restore / ceiling = {restore_rate / raw_rate:.0%}.",
        "",
        f"## 4. Worker RSS with {args.state:,} aggregates in state (`streamfold worker`)",
        "",
        "| moment | RSS MB |",
        "|---|---:|",
    ]
    lines += [f"| {moment} | {mb:,.0f} |" for moment, mb in rss.items()]
    worst = max(rss.values())
    lines += ["", f"Highest: {worst:,.0f} MB (target ≤ 250 MB: {_met(worst <= 250)})."]
    moments = list(next(iter(probes.values())))
    lines += [
        "",
        "The same restore alone in a fresh interpreter (`benchmarks/rss_probe.py`: "
        "ChangelogRestorer into fresh stores with the worker's RocksDB options), RSS MB:",
        "",
        "| restore | " + " | ".join(moments) + " |",
        "|---|" + "---:|" * len(moments),
    ]
    for name, figures in probes.items():
        lines.append(f"| {name} | " + " | ".join(f"{figures[m]:,.1f}" for m in moments) + " |")
    titles = {
        "handwritten": "(b) the hand-written loop",
        "worker EOS on": "(c) the worker, exactly-once",
        "restore": "the restore",
        "latency": f"the worker process at {args.latency_rate:,} commands/s, wall time",
    }
    for name, rows in profiles.items():
        lines += ["", f"## Profile: {titles[name]} (py-spy)", "", *rows]
    return "\n".join(lines) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
