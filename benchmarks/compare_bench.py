"""streamfold side by side with Quix Streams and faust-streaming, on the same broker, in one run.

Run: ``.venv/bin/python benchmarks/compare_bench.py [--commands 100000] [--aggregates 10000]
[--partitions 6] [--rounds 2] [--latency-rate 1000] [--faust-latency-rate 200]
[--latency-rounds 2] [--latency-seconds 20] [--engines ...] [--profile] [--quick]`` from the
repository root (``--render compare.json`` writes the report
again from a run's JSON). It starts its own single-node Kafka (the fetched jars) and one schema
registry process, makes (or reuses) a virtualenv per peer under ``~/.cache/streamfold/bench-venvs``
(Quix Streams 3.28 needs confluent-kafka below 2.13, so the peers cannot share streamfold's
environment), and then, for every engine of :mod:`compare_engines`:

1. throughput: the store_stock workload (``--commands`` commands of
   :func:`topologies.retail.workload.stock_commands` over ``--aggregates`` aggregates,
   Confluent Avro) is produced once; before each run it is copied byte for byte (partitions,
   keys, headers, timestamps) into the engine's own input topic, and the engine starts on it
   with a fresh group and empty state. A rate is commands over the span from the first to the
   last output record, as a read_committed consumer sees them, by their LogAppendTime
   timestamps. The fast engines run interleaved ``--rounds`` times (best rate counts);
   faust, by far the slowest, runs ``--faust-rounds`` times. Peak RSS is the engine process's
   (with any children), sampled every 0.2 s;
2. latency: each engine (passthrough aside) as a process answering commands sent at a steady
   ``--latency-rate`` per second (faust: ``--faust-latency-rate``) after a warm-up; per
   command, the time from the client's send to its read_committed consumer seeing the
   result. The floor (bare transactions, no processing: ``handwritten_loop.py --floor``) and
   the worker run ``--latency-rounds`` interleaved rounds, the lowest p99 counting;
3. outputs: each run's records are read back whole: counts per topic, outcomes, and for a
   sample of commands and aggregates the decoded results, events and last states, compared
   with the hand-written loop's (equal work, equal answers).

faust runs with exactly-once; if that fails, the harness says why and runs at-least-once.
When the worker's exactly-once rate is below 80 % of the hand-written loop's (or with
``--profile``), one more run of each is sampled with py-spy and the report says where the
time goes (without py-spy installed, the report says so and the run goes on).
The report goes to ``benchmarks/reports/compare.md``, with ``compare.json`` and ``compare.png``,
written again after every run (marked partial until the run ends), so a long run that stops
keeps what it measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topologies.retail.domain import retail
from topologies.retail.workload import stock_commands

from compare_engines import (
    ENGINES,
    PEER_ENVS,
    EngineFailed,
    RunningEngine,
    copy_input,
    create_topics,
    ensure_peer_env,
    read_outputs,
    run_to_completion,
)
from compare_report import best_rates, write_report
from measurements import WARM_UP, BenchStack, ResultWatcher, paced, profile_summary
from streamfold.cli.edge import default_cache_dir
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.observability.logging import configure_logging
from streamfold.registry.server import RegistryProcess
from streamfold.transport.admin import KafkaAdmin
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import read_to_end

REPORTS = Path(__file__).resolve().parent / "reports"
FAST = ("handwritten", "streamfold EOS", "streamfold ALO", "quix EOS", "quix ALO")
SAMPLE_EVERY = 97
SAMPLE_AGGREGATES = 40


@dataclass
class Options:
    """What one comparison runs."""

    commands: int = 100_000
    aggregates: int = 10_000
    partitions: int = 6
    rounds: int = 2
    faust_rounds: int = 1
    latency_rate: int = 1000
    #: faust's offered load (it does not keep up with ``latency_rate``).
    faust_latency_rate: int = 200
    #: Interleaved latency rounds of the floor and the worker (the others run once).
    latency_rounds: int = 2
    latency_seconds: float = 20.0
    latency: bool = True
    stall_s: float = 180.0
    #: Profile the worker and the hand-written loop: always, or when the worker's best rate
    #: is below this share of the loop's (its target); None: only when ``profile``.
    profile: bool = False
    profile_below: float | None = 0.8
    #: Only these engines (names of :data:`compare_engines.ENGINES`); None: all.
    engines: list[str] | None = None

    def runs(self, name: str) -> bool:
        return (
            self.engines is None
            or name in self.engines
            or name.split(maxsplit=1)[0] in self.engines
        )


@dataclass
class Run:
    """One engine's run on the pre-filled input."""

    engine: str
    round: int
    rate: float = 0.0
    span_s: float = 0.0
    peak_rss_mb: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    log_append_time: bool = True
    equal_to_handwritten: bool | None = None
    error: str | None = None


@dataclass
class Latency:
    """One engine's latency at the fixed offered load."""

    engine: str
    rate: int
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    commands: int = 0
    error: str | None = None


@dataclass
class Comparison:
    """Everything one comparison measured."""

    options: dict[str, Any]
    runs: list[Run]
    latencies: list[Latency]
    notes: list[str]
    #: The sampled outputs per engine (first successful run each), for checking equality.
    samples: dict[str, dict[str, Any]]
    #: py-spy summaries (markdown lines) of extra runs, by engine.
    profiles: dict[str, list[str]] = field(default_factory=dict)


def prepare_input(
    stack: BenchStack, options: Options
) -> tuple[str, int, tuple[set[str], set[str]]]:
    """Produce the workload once; its topic, record count and sampled command/aggregate ids."""
    prefix = stack.fresh_prefix()
    create_topics(stack, prefix)
    producer = CommandProducer(stack.kafka, stack.codec(), retail, topic_prefix=prefix)
    sample_commands: set[str] = set()
    sample_aggregates: set[str] = set()
    aggregate = retail.get("store_stock")
    for i, command in enumerate(stock_commands(options.aggregates, options.commands)):
        command_id = producer.send(command)
        if i % SAMPLE_EVERY == 0:
            sample_commands.add(command_id)
        if len(sample_aggregates) < SAMPLE_AGGREGATES:
            sample_aggregates.add(aggregate.aggregate_id(command))
    producer.flush()
    topic = stack.topics(prefix).commands
    stored = stack.records(topic)
    if stored != options.commands:
        raise SystemExit(f"{topic} holds {stored} records; {options.commands} were sent")
    return topic, stored, (sample_commands, sample_aggregates)


def throughput_plan(options: Options) -> list[tuple[str, int]]:
    """The order of the runs: passthrough, interleaved rounds of the fast engines, faust."""
    plan = [("passthrough", 0)]
    plan += [(name, r) for r in range(options.rounds) for name in FAST]
    plan += [("faust EOS", r) for r in range(options.faust_rounds)]
    return [(name, r) for name, r in plan if options.runs(name)]


def run_throughput(
    stack: BenchStack,
    options: Options,
    pythons: dict[str, Path],
    master: str,
    total: int,
    samples: tuple[set[str], set[str]],
    comparison: Comparison,
    save: Callable[[Comparison], None],
) -> None:
    """Every planned run, into ``comparison`` (its runs, the sampled outputs per engine,
    notes on what changed course), saved after each run."""
    runs, sampled, notes = comparison.runs, comparison.samples, comparison.notes
    for planned, r in throughput_plan(options):
        faust_failed = any(n.startswith("faust EOS") for n in notes)
        name = "faust ALO" if planned == "faust EOS" and faust_failed else planned
        run = _one_run(stack, options, pythons, name, r, master, total, samples, sampled)
        _show(run)
        runs.append(run)
        if run.error is not None and name == "faust EOS":
            notes.append(f"faust EOS failed, so faust ran at-least-once: {run.error}")
            run = _one_run(stack, options, pythons, "faust ALO", r, master, total, samples, sampled)
            _show(run)
            runs.append(run)
        _compare_outputs(comparison)
        save(comparison)


def _compare_outputs(comparison: Comparison) -> None:
    """Whether each run's sampled outputs equal the hand-written loop's (once it has run)."""
    reference = comparison.samples.get("handwritten")
    for run in comparison.runs:
        if reference is not None and run.error is None and run.engine != "passthrough":
            run.equal_to_handwritten = _same(comparison.samples[run.engine], reference)


def _show(run: Run) -> None:
    shown = f"{run.rate:,.0f} commands/s" if run.error is None else f"FAILED: {run.error}"
    rss = f"peak RSS {run.peak_rss_mb:,.0f} MB"
    print(f"round {run.round + 1}: {run.engine}: {shown} ({rss})", flush=True)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("results", "events", "states"))


def _one_run(
    stack: BenchStack,
    options: Options,
    pythons: dict[str, Path],
    name: str,
    r: int,
    master: str,
    total: int,
    samples: tuple[set[str], set[str]],
    sampled: dict[str, dict[str, Any]],
    profile: list[str] | None = None,
) -> Run:
    """One run of ``name``; with ``profile``, sampled with py-spy (lines appended to it)."""
    engine = ENGINES[name]
    prefix = stack.fresh_prefix()
    topics = create_topics(stack, prefix)
    copied = copy_input(stack.kafka, master, topics.commands)
    if copied != total:
        raise SystemExit(f"copied {copied} of {total} commands into {topics.commands}")
    running = RunningEngine(stack, engine, prefix, total)
    run = Run(name, r)
    outputs_of = [("events", topics.events)]
    if engine.kind != "passthrough":
        outputs_of = [
            ("events", topics.events),
            ("state", topics.state),
            ("results", topics.results),
        ]
    try:
        running.start(pythons.get(engine.kind))
        if profile is None:
            run_to_completion(running, outputs_of[-1][1], total, options.stall_s)
        else:
            marker = "handwritten_loop.py" if engine.kind == "handwritten" else "worker.py"
            profile += profile_summary(
                lambda: run_to_completion(running, outputs_of[-1][1], total, options.stall_s),
                running.directory,
                marker,
                pid=running.pid,
            )
    except EngineFailed as exc:
        run.error = str(exc)
    finally:
        running.stop()
        run.peak_rss_mb = running.peak_rss
    if run.error is not None:
        return run
    no_samples: tuple[set[str], set[str]] = (set(), set())
    out = read_outputs(
        stack, outputs_of, *(no_samples if engine.kind == "passthrough" else samples)
    )
    run.counts, run.outcomes, run.log_append_time = out.counts, out.outcomes, out.log_append_time
    run.counts["changelog"] = _changelog_records(stack, prefix)
    run.span_s = (out.last_ms - out.first_ms) / 1000
    run.rate = total / max(run.span_s, 0.001)
    sampled.setdefault(name, {"results": out.results, "events": out.events, "states": out.states})
    return run


def _changelog_records(stack: BenchStack, prefix: str) -> int:
    """Committed records in the changelog topics the run made (its own or its framework's)."""
    mark = prefix.strip(".")
    names = [t for t in KafkaAdmin(stack.kafka).list_topics() if mark in t and "changelog" in t]
    return sum(sum(1 for _ in read_to_end(stack.kafka, t, timeout=60)) for t in names)


def latency_plan(options: Options) -> list[tuple[str, int]]:
    """The latency runs and their offered loads: interleaved rounds of the floor and the
    worker, then each other engine once (faust at its own rate)."""
    plan = [
        (name, options.latency_rate)
        for _ in range(options.latency_rounds)
        for name in ("floor", "streamfold EOS")
    ]
    plan += [(name, options.latency_rate) for name in FAST if name != "streamfold EOS"]
    plan.append(("faust EOS", options.faust_latency_rate))
    return [(name, rate) for name, rate in plan if options.runs(name)]


def run_latency(
    stack: BenchStack, options: Options, pythons: dict[str, Path], engines: list[str], rate: int
) -> list[Latency]:
    """Each engine as a process at ``rate`` commands/s, after a warm-up."""
    measured = []
    for name in engines:
        engine = ENGINES[name]
        prefix = stack.fresh_prefix()
        topics = create_topics(stack, prefix)
        running = RunningEngine(stack, engine, prefix, None)
        watcher = ResultWatcher(stack.kafka, topics.results, stack.partitions)
        figures = Latency(name, rate)
        # The client's own batching must not add to what is measured.
        producer = CommandProducer(
            stack.kafka, stack.codec(), retail, topic_prefix=prefix, **{"linger.ms": 0}
        )
        try:
            running.start(pythons.get(engine.kind))
            watcher.start()
            n = int(rate * options.latency_seconds)
            commands = list(stock_commands(options.aggregates, WARM_UP + n, seed=11))
            warm = paced(producer, commands[:WARM_UP], rate)
            _wait_for(watcher, running, list(warm), 240)
            sent = paced(producer, commands[WARM_UP:], rate)
            _wait_for(watcher, running, list(sent), 120)
            missing = [i for i in sent if i not in watcher.seen]
            if missing:
                figures.error = f"{len(missing)} of {len(sent)} results never arrived"
            else:
                values = sorted(watcher.seen[i] - t for i, t in sent.items())
                figures.p50_ms = _quantile(values, 0.5)
                figures.p99_ms = _quantile(values, 0.99)
                figures.max_ms = values[-1] * 1000
                figures.commands = len(values)
        except Exception as exc:  # noqa: BLE001 - one engine's failure is reported, not fatal
            figures.error = f"{type(exc).__name__}: {exc}"
        finally:
            if watcher.is_alive():
                watcher.stop()
            running.stop()
            producer.close()
        shown = figures.error or f"p50 {figures.p50_ms:,.1f} ms, p99 {figures.p99_ms:,.1f} ms"
        print(f"latency at {rate}/s: {name}: {shown}", flush=True)
        measured.append(figures)
    return measured


def _wait_for(
    watcher: ResultWatcher, running: RunningEngine, ids: list[str], timeout: float
) -> None:
    """Until every result of ``ids`` is seen; fail at once if the engine exited."""
    deadline = time.monotonic() + timeout
    while any(i not in watcher.seen for i in ids) and time.monotonic() < deadline:
        if not running.running():
            raise EngineFailed(f"{running.engine.name} exited:\n{running.log_tail()}")
        time.sleep(0.1)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def compare(
    stack: BenchStack,
    options: Options,
    pythons: dict[str, Path],
    report: Callable[[str], None],
    save: Callable[[Comparison], None] | None = None,
) -> Comparison:
    """Run the whole comparison on ``stack``; ``save`` gets what is measured so far after
    every run (a long run that stops keeps its finished runs)."""
    stack.partitions = options.partitions
    master, total, sampling = prepare_input(stack, options)
    report(f"input ready: {total:,} commands in {master}")
    comparison = Comparison(asdict(options), [], [], [], {}, {})
    keep = save if save is not None else (lambda _c: None)
    run_throughput(stack, options, pythons, master, total, sampling, comparison, keep)
    best = best_rates(comparison.runs)
    eos, hand = best.get("streamfold EOS", 0.0), best.get("handwritten", 0.0)
    below = options.profile_below is not None and eos < options.profile_below * hand
    if options.profile or (eos and hand and below):
        for name in ("handwritten", "streamfold EOS"):
            report(f"profiling {name} (py-spy, one more run)")
            lines: list[str] = []
            _one_run(stack, options, pythons, name, -1, master, total, sampling, {}, lines)
            comparison.profiles[name] = lines
            keep(comparison)
    if options.latency:
        ran_alo = any(r.engine == "faust ALO" for r in comparison.runs)
        for planned, rate in latency_plan(options):
            name = "faust ALO" if planned == "faust EOS" and ran_alo else planned
            comparison.latencies += run_latency(stack, options, pythons, [name], rate)
            keep(comparison)
    return comparison


def peer_pythons(cache_dir: Path) -> dict[str, Path]:
    """The peers' interpreters, their virtualenvs made when missing."""
    return {kind: ensure_peer_env(peer, cache_dir) for kind, peer in PEER_ENVS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--commands", type=int, default=defaults.commands)
    parser.add_argument("--aggregates", type=int, default=defaults.aggregates)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--faust-rounds", type=int, default=defaults.faust_rounds)
    parser.add_argument("--latency-rate", type=int, default=defaults.latency_rate)
    parser.add_argument("--faust-latency-rate", type=int, default=defaults.faust_latency_rate)
    parser.add_argument("--latency-rounds", type=int, default=defaults.latency_rounds)
    parser.add_argument("--latency-seconds", type=float, default=defaults.latency_seconds)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--engines",
        nargs="+",
        help="only these (e.g. handwritten 'streamfold EOS' quix faust); default: all",
    )
    parser.add_argument("--profile", action="store_true", help="profile the worker anyway")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--out", type=Path, default=REPORTS, help="where the report goes")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only write the report again from a JSON"
    )
    args = parser.parse_args()
    if args.render is not None:
        data = json.loads(args.render.read_text(encoding="utf-8"))
        meta = data.get("meta", {"command": "benchmarks/compare_bench.py", "started": "?"})
        paths = write_report(
            load(data),
            args.out,
            meta["command"],
            meta["started"],
            meta.get("revision"),
            partial=meta.get("partial") == "yes",
        )
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        return
    options = Options(
        commands=args.commands,
        aggregates=args.aggregates,
        partitions=args.partitions,
        rounds=args.rounds,
        faust_rounds=args.faust_rounds,
        latency_rate=args.latency_rate,
        faust_latency_rate=args.faust_latency_rate,
        latency_rounds=args.latency_rounds,
        latency_seconds=args.latency_seconds,
        latency=not args.no_latency,
        engines=args.engines,
        profile=args.profile,
    )
    if args.quick:
        options.commands, options.aggregates = min(options.commands, 5_000), 1_000
        options.rounds, options.latency_seconds = 1, 5.0
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("matplotlib is missing: run scripts/setup (or pip install -e '.[bench]')")
    configure_logging("console", "WARNING")
    started = time.strftime("%Y-%m-%d %H:%M")
    command = " ".join(["benchmarks/compare_bench.py", *sys.argv[1:]])
    pythons = peer_pythons(default_cache_dir())
    with (
        tempfile.TemporaryDirectory(prefix="compare-bench-") as tmp,
        LocalKafkaCluster(Path(tmp) / "kafka", default_cache_dir()) as kafka,
    ):
        (port,) = free_ports(1)
        with RegistryProcess(kafka.bootstrap_servers, port, log_file=Path(tmp) / "registry.log"):
            stack = BenchStack(kafka.bootstrap_servers, f"http://127.0.0.1:{port}", Path(tmp))
            comparison = compare(
                stack,
                options,
                pythons,
                lambda s: print(s, flush=True),
                lambda c: write_report(c, args.out, command, started, partial=True),
            )
    paths = write_report(comparison, args.out, command, started)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


def load(data: dict[str, Any]) -> Comparison:
    """A comparison from its JSON form (to render the report again)."""
    return Comparison(
        data["options"],
        [Run(**r) for r in data["runs"]],
        [Latency(**x) for x in data["latencies"]],
        data["notes"],
        data["samples"],
        data.get("profiles", {}),
    )


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    main()
