"""The comparison's report: ``compare.md`` (tables), ``compare.json`` (every figure) and
``compare.png`` (matplotlib: throughput and latency per engine)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from compare_engines import ENGINES, PEER_ENVS
from measurements import revision as current_revision

if TYPE_CHECKING:
    from compare_bench import Comparison, Latency, Run

ROOT = Path(__file__).resolve().parents[1]
ORDER = (
    "passthrough",
    "floor",
    "handwritten",
    "streamfold EOS",
    "streamfold ALO",
    "quix EOS",
    "quix ALO",
    "faust EOS",
    "faust ALO",
)
LABELS = {
    "passthrough": "raw consume→produce loop (context)",
    "floor": "bare transactions, no processing (latency floor)",
    "handwritten": "hand-written confluent-kafka loop (ceiling)",
    "streamfold EOS": "streamfold worker, exactly-once",
    "streamfold ALO": "streamfold worker, at-least-once",
    "quix EOS": "Quix Streams 3.28.1, exactly-once",
    "quix ALO": "Quix Streams 3.28.1, at-least-once",
    "faust EOS": "faust-streaming 0.15.3, exactly-once",
    "faust ALO": "faust-streaming 0.15.3, at-least-once",
}


def best_rates(runs: list[Run]) -> dict[str, float]:
    """The best rate of each engine over its successful runs."""
    best: dict[str, float] = {}
    for run in runs:
        if run.error is None:
            best[run.engine] = max(best.get(run.engine, 0.0), run.rate)
    return best


def best_latencies(latencies: list[Latency]) -> dict[str, Latency]:
    """Each engine's successful latency round with the lowest p99."""
    best: dict[str, Latency] = {}
    for x in latencies:
        if x.error is None and (x.engine not in best or x.p99_ms < best[x.engine].p99_ms):
            best[x.engine] = x
    return best


def write_report(
    comparison: Comparison,
    out: Path,
    command: str,
    started: str,
    revision: str | None = None,
    *,
    partial: bool = False,
) -> dict[str, Path]:
    """Write the three files into ``out``; return their paths.

    ``revision``: the commit measured (default: the work tree's now, ``+`` when dirty);
    ``partial``: written while the run goes on (the report says so).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "compare.md", "json": out / "compare.json", "png": out / "compare.png"}
    meta = {"command": command, "started": started, "revision": revision or current_revision()}
    if partial:
        meta["partial"] = "yes"
    data = {"meta": meta, **asdict(comparison)}
    # The runs say whether the samples are equal: keep only their sizes (a report written
    # again from this file has only those).
    data["samples"] = {
        engine: {part: len(v) if isinstance(v, dict) else v for part, v in sample.items()}
        for engine, sample in comparison.samples.items()
    }
    paths["json"].write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    chart(comparison, paths["png"])
    paths["md"].write_text(render(comparison, meta), encoding="utf-8")
    return paths


def render(comparison: Comparison, meta: dict[str, str]) -> str:
    """The markdown report."""
    command, started = meta["command"], meta["started"]
    options, runs = comparison.options, comparison.runs
    best = best_rates(runs)
    engines = [e for e in ORDER if e in {r.engine for r in runs}]
    latency = best_latencies(comparison.latencies)
    tried = {x.engine for x in comparison.latencies}
    rss: dict[str, float] = {}
    for run in runs:
        rss[run.engine] = max(rss.get(run.engine, 0.0), run.peak_rss_mb)
    hand = best.get("handwritten", 0.0)
    faust = "faust EOS" if "faust EOS" in best else "faust ALO"
    peers = [p for p in ("quix EOS", "quix ALO", faust) if p in best]
    lines = [
        "# streamfold, Quix Streams and faust-streaming side by side",
        "",
        f"`.venv/bin/python {command}`, {started} UTC, at commit {meta['revision']}. Machine: "
        f"{os.cpu_count()} cores shared with other work, one single-node local Kafka broker "
        "(KRaft) and one registry process on the same machine; every engine in the same run, "
        "on the same broker, so compare the ratios, not the absolute figures.",
        "",
        *(
            [
                f"**Partial report**: written after each run while the benchmark ran; it "
                f"holds {len(runs)} throughput runs and {len(comparison.latencies)} latency "
                "runs (a finished run rewrites it whole).",
                "",
            ]
            if meta.get("partial")
            else []
        ),
        f"## Throughput: {options['commands']:,} store_stock commands over "
        f"{options['aggregates']:,} aggregates, {options['partitions']} partitions",
        "",
        "Each run starts from a byte-for-byte copy of one pre-filled input topic, with a fresh "
        "group and empty state. Rate = commands / (last - first output record's LogAppendTime), "
        f"read back read_committed. The fast engines ran {options['rounds']} interleaved "
        f"rounds, faust {options['faust_rounds']}; the best rate counts.",
        "",
        "| engine | guarantee | commands/s (best) | each round | vs hand-written | "
        + " | ".join(f"vs {p}" for p in peers)
        + " | p50 ms | p99 ms | peak RSS MB |",
        "|---|---|---:|---|---:|" + "---:|" * len(peers) + "---:|---:|---:|",
    ]
    for name in engines:
        rounds = ", ".join(
            f"{r.rate:,.0f}" if r.error is None else "failed" for r in runs if r.engine == name
        )
        rate = best.get(name)
        cells = [LABELS[name], ENGINES[name].guarantee.split(" (")[0]]
        cells += [f"{rate:,.0f}" if rate else "-", rounds]
        cells.append(f"{rate / hand:.0%}" if rate and hand else "-")
        cells += [f"{rate / best[p]:.2f}x" if rate else "-" for p in peers]
        lat = latency.get(name)
        if lat is None:
            cells += ["failed", "failed"] if name in tried else ["-", "-"]
        else:
            cells += [f"{lat.p50_ms:,.1f}", f"{lat.p99_ms:,.1f}"]
        cells.append(f"{rss.get(name, 0):,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_targets(best), ""]
    if comparison.latencies:
        lines += _latency_section(comparison, latency)
    lines += [
        "## What each engine wrote per command",
        "",
        "Measured in the first run of each engine: records read back per command (the "
        "changelog column counts the engine's own changelog topics, whatever their name).",
        "",
        "| engine | events | state | results | changelog | outcomes | what it writes | "
        "decoded sample equal to the hand-written loop's |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for name in engines:
        first = next((r for r in runs if r.engine == name and r.error is None), None)
        if first is None:
            continue
        n = options["commands"]
        per = [f"{first.counts.get(t, 0) / n:.3f}" for t in ("events", "state", "results")]
        per.append(f"{first.counts.get('changelog', 0) / n:.3f}")
        outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(first.outcomes.items())) or "-"
        equal = {True: "yes", False: "**no**", None: "-"}[first.equal_to_handwritten]
        lat_ok = "" if first.log_append_time else " (not LogAppendTime!)"
        lines.append(
            f"| {name} | {' | '.join(per)} | {outcomes} | {ENGINES[name].writes}{lat_ok} "
            f"| {equal} |"
        )
    lines += [
        "",
        "Equal work: every engine but the raw loop decodes the Confluent-Avro command, reads "
        "its aggregate's entry (state, version, the last 32 command ids for idempotency) from "
        "RocksDB, decides and folds with the retail store_stock rules, writes the entry back, "
        "and produces the event and state record (accepted commands) and the result record "
        "(every command, keyed by command id, on the command's partition number), Avro in the "
        "Confluent wire format with the same registered schemas and headers, lz4-compressed, "
        "linger 2 ms. Commits follow one rule for all: every 100 ms or 1,000 commands "
        "(Quix `commit_interval`/`commit_every`, faust `broker_commit_interval`/"
        "`broker_commit_every`). The peers (`benchmarks/peers/`) run the fold on plain dicts "
        "(`peers/fold.py`): pydantic and streamfold are not in their virtualenvs, so they "
        "skip the model validation the worker and the hand-written loop do: less work per "
        "command, never more. Quix: one stateful `update` per command (its RocksDB state, "
        "changelog on), the outputs produced through the application's own checkpoint "
        "producer (the one `.to()` uses, transactional under exactly-once; `.to()` itself "
        "cannot pick the result's partition). faust: one agent, a table with "
        '`store="rocksdb://"` (faust-streaming backs it with rocksdict; it knows no '
        "`rocksdict://`), outputs with `await topic.send()`. The streamfold worker and the "
        "hand-written loop write one changelog record per aggregate touched per "
        "transaction; Quix one per key updated per checkpoint; faust one per table write.",
        "",
        "Peer environments: "
        + "; ".join(
            f"{p.package} {p.version} ({', '.join(p.requirements)})" for p in PEER_ENVS.values()
        )
        + ", each in a virtualenv of its own under `~/.cache/streamfold/bench-venvs/`.",
    ]
    if comparison.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in comparison.notes)]
    failures = [r for r in runs if r.error is not None]
    if failures:
        lines += ["", "## Failed runs", ""]
        for run in failures:
            first_line = (run.error or "").splitlines()[0]
            lines.append(f"- {run.engine}, round {run.round + 1}: {first_line}")
    titles = {"handwritten": "the hand-written loop", "streamfold EOS": "the worker, exactly-once"}
    for name, rows in comparison.profiles.items():
        lines += ["", f"## Where the time goes: {titles.get(name, name)} (py-spy, CPU)", ""]
        lines += rows
    lines += ["", "![throughput and latency](compare.png)"]
    return "\n".join(lines) + "\n"


def _latency_section(comparison: Comparison, best: dict[str, Latency]) -> list[str]:
    options = comparison.options
    lines = [
        "## Latency",
        "",
        f"Each engine as a process, commands sent at a steady rate for "
        f"{options['latency_seconds']:g} s after a warm-up of 200; from the client's send to "
        "its read_committed consumer seeing the result (linger 0 on the client). The floor "
        "and the worker ran interleaved rounds; the round with the lowest p99 counts.",
        "",
        "| engine | offered /s | p99 ms of each round | p50 ms | p99 ms | max ms | p99 vs floor |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    floor = best.get("floor")
    for name in ORDER:
        rounds = [x for x in comparison.latencies if x.engine == name]
        if not rounds:
            continue
        each = ", ".join("failed" if x.error else f"{x.p99_ms:,.1f}" for x in rounds)
        lat = best.get(name)
        if lat is None:
            lines.append(f"| {LABELS[name]} | {rounds[0].rate:,} | {each} | - | - | - | - |")
            continue
        ratio = f"{lat.p99_ms / floor.p99_ms:.2f}x" if floor else "-"
        lines.append(
            f"| {LABELS[name]} | {lat.rate:,} | {each} | {lat.p50_ms:,.1f} | {lat.p99_ms:,.1f} "
            f"| {lat.max_ms:,.1f} | {ratio} |"
        )
    worker = best.get("streamfold EOS")
    lines.append("")
    if floor and worker:
        ratio = worker.p99_ms / floor.p99_ms
        lines.append(
            f"- streamfold EOS p99 / bare-transaction p99 at {worker.rate:,}/s: **{ratio:.2f}x** "
            f"({worker.p99_ms:,.1f} ms / {floor.p99_ms:,.1f} ms; target ≤ 1.25x: "
            f"{_met(ratio <= 1.25)})."
        )
    failed = [x for x in comparison.latencies if x.error]
    lines += [f"- latency of {x.engine} failed: {x.error}" for x in failed]
    return [*lines, ""]


def _targets(best: dict[str, float]) -> list[str]:
    eos, hand = best.get("streamfold EOS"), best.get("handwritten")
    out = []
    if eos and hand:
        out.append(
            f"- streamfold EOS / hand-written loop: **{eos / hand:.0%}** (the same work "
            "written out on the libraries, no framework)."
        )
    if eos and best.get("quix EOS"):
        ratio = eos / best["quix EOS"]
        out.append(
            f"- streamfold EOS / Quix Streams EOS: **{ratio:.2f}x** (target ≥ 2.0x: "
            f"{_met(ratio >= 2.0)})."
        )
    faust = best.get("faust EOS") or best.get("faust ALO")
    if eos and faust:
        which = "EOS" if best.get("faust EOS") else "ALO"
        out.append(
            f"- streamfold EOS / faust-streaming {which}: **{eos / faust:.1f}x** "
            f"(target ≥ 25x: {_met(eos >= 25 * faust)})."
        )
    if hand and best.get("quix EOS"):
        out.append(f"- hand-written loop / Quix Streams EOS: {hand / best['quix EOS']:.2f}x.")
    if hand and faust:
        out.append(f"- hand-written loop / faust-streaming: {hand / faust:.1f}x.")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def chart(comparison: Comparison, path: Path) -> None:
    """Throughput (best, log scale) and p50/p99 latency per engine."""
    import matplotlib  # noqa: PLC0415 - the optional extra "bench", needed here only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    best = best_rates(comparison.runs)
    names = [e for e in ORDER if e in best]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    bars = left.barh(names[::-1], [best[n] for n in names[::-1]], color="#3b7dd8")
    left.set_xscale("log")
    left.set_xlabel("commands/s (best round, log scale)")
    left.set_title(f"Throughput, {comparison.options['commands']:,} commands")
    for bar, name in zip(bars, names[::-1], strict=True):
        left.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {best[name]:,.0f}",
            va="center",
            fontsize=8,
        )
    chosen = best_latencies(comparison.latencies)
    measured: list[Latency] = [chosen[e] for e in ORDER if e in chosen]
    if measured:
        labels = [x.engine for x in measured][::-1]
        y = range(len(labels))
        right.barh([i + 0.2 for i in y], [x.p50_ms for x in measured][::-1], 0.4, label="p50")
        right.barh([i - 0.2 for i in y], [x.p99_ms for x in measured][::-1], 0.4, label="p99")
        right.set_yticks(list(y), labels)
        right.set_xscale("log")
        right.set_xlabel("ms from send to result seen (log scale)")
        right.set_title(f"Latency at {comparison.options['latency_rate']:,} commands/s")
        right.legend()
    else:
        right.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
