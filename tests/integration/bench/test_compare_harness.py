"""The side-by-side benchmark harness, small: every engine runs and writes the same answers.

No timing is asserted: the figures of a few hundred commands mean nothing. What is checked is
that the harness works end to end on the real broker: the peer virtualenvs are made (from
PyPI, once; later runs reuse them), every engine processes every command, writes the outputs
the report says it writes, and decodes to the same results, events and states as the
hand-written loop; latency and the report files come out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from compare_bench import Comparison, Options, compare, peer_pythons
from compare_report import write_report
from measurements import BenchStack
from streamfold.cli.edge import default_cache_dir
from streamfold.testing.pytest_plugin import KafkaEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMMANDS = 300


def test_every_engine_answers_every_command_alike(
    kafka_cluster: KafkaEndpoint, schema_registry: Any, tmp_path: Path
) -> None:
    pythons = peer_pythons(default_cache_dir())
    stack = BenchStack(kafka_cluster.bootstrap_servers, schema_registry.url, tmp_path)
    options = Options(
        commands=COMMANDS,
        aggregates=40,
        rounds=1,
        faust_rounds=1,
        latency_rate=50,
        faust_latency_rate=50,
        latency_rounds=2,
        latency_seconds=1.0,
        stall_s=120,
        profile_below=None,
    )
    saved: list[tuple[int, int]] = []  # (throughput runs, latency runs) at each save
    partial = tmp_path / "partial"

    def save(so_far: Comparison) -> None:
        saved.append((len(so_far.runs), len(so_far.latencies)))
        write_report(so_far, partial, "compare_bench.py --test", "now", partial=True)

    comparison = compare(stack, options, pythons, print, save)

    runs = {run.engine: run for run in comparison.runs}
    failed = {name: run.error for name, run in runs.items() if run.error}
    assert not failed
    assert set(runs) == {
        "passthrough",
        "handwritten",
        "streamfold EOS",
        "streamfold ALO",
        "quix EOS",
        "quix ALO",
        "faust EOS",
    }
    assert runs["passthrough"].counts["events"] == COMMANDS
    reference = runs["handwritten"]
    accepted = reference.outcomes["accepted"]
    # The workload has both outcomes, so equal outcomes mean the same decisions.
    assert 0 < accepted < COMMANDS
    for name, run in runs.items():
        assert run.log_append_time, name
        assert run.rate > 0 and run.peak_rss_mb > 0, name
        if name == "passthrough":
            continue
        assert run.counts["results"] == COMMANDS, name
        assert run.counts["events"] == run.counts["state"] == accepted, name
        assert run.outcomes == reference.outcomes, name
        assert run.counts["changelog"] > 0, name
        assert run.equal_to_handwritten is True, name

    # The sampled decoded values are not empty, and each engine's equal the loop's.
    samples = comparison.samples
    assert len(samples["handwritten"]["results"]) >= COMMANDS // 100
    assert samples["handwritten"]["events"] and samples["handwritten"]["states"]
    for name in runs.keys() - {"passthrough"}:
        assert samples[name]["results"] == samples["handwritten"]["results"], name
        assert samples[name]["events"] == samples["handwritten"]["events"], name
        assert samples[name]["states"] == samples["handwritten"]["states"], name

    # Every engine's latency, and two interleaved rounds of the floor and the worker.
    ran = [x.engine for x in comparison.latencies]
    assert ran[:4] == ["floor", "streamfold EOS", "floor", "streamfold EOS"]
    assert sorted(ran[4:]) == sorted(set(runs) - {"passthrough", "streamfold EOS"})
    for latency in comparison.latencies:
        assert latency.error is None, latency.engine
        assert latency.commands == 50, latency.engine
        assert 0 < latency.p50_ms <= latency.p99_ms, latency.engine

    # The report was saved after every run: a run that stops keeps what it measured.
    throughput_runs, latency_runs = len(comparison.runs), len(comparison.latencies)
    assert saved[:throughput_runs] == [(n, 0) for n in range(1, throughput_runs + 1)]
    assert saved[throughput_runs:] == [(throughput_runs, n) for n in range(1, latency_runs + 1)]
    assert "**Partial report**" in (partial / "compare.md").read_text(encoding="utf-8")

    paths = write_report(comparison, tmp_path / "report", "compare_bench.py --test", "now")
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert {r["engine"] for r in data["runs"]} == set(runs)
    text = paths["md"].read_text(encoding="utf-8")
    assert "Quix Streams 3.28.1, exactly-once" in text and "faust-streaming 0.15.3" in text
    assert "Partial report" not in text
    assert "bare-transaction p99" in text and "bare transactions, no processing" in text
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
