"""The worker benchmark runs to its report on the real broker, small.

No figure is asserted: a few hundred commands time nothing. What is checked is that every
section ran and wrote its figures (the restore's RSS probe among them), so the benchmark a
performance claim rests on cannot rot unseen.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def test_the_worker_benchmark_writes_every_section(tmp_path: Path) -> None:
    report = tmp_path / "worker.md"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "worker_bench.py"),
        "--quick",
        "--commands", "600",
        "--aggregates", "60",
        "--state", "3000",
        "--latency-seconds", "1",
        "--latency-rate", "100",
        "--report", str(report),
    ]  # fmt: skip
    done = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text(encoding="utf-8")
    for heading in ("## 1. Throughput", "## 2.", "## 3. Restore", "## 4. Worker RSS"):
        assert heading in text, heading
    rss = re.search(r"\| peak over the whole run \| (\d+) \|", text)
    assert rss is not None and int(rss.group(1)) > 0, text
    assert "restore consumer as configured" in text
