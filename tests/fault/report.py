"""``benchmarks/reports/faults.md``: the fault suite's figures, one section per test.

Each test replaces its own section, one per scale (between ``<!-- name@scale -->``
markers), as soon as it has its figures: a long run never loses what it measured, a CI run
(scale 0.2) never overwrites the full-scale figures, and the file holds the latest figures
of every test at every scale it ran, with the time they were taken at.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "reports" / "faults.md"
HEADER = (
    "# Fault figures\n\n"
    "Written by the fault suite (`tests/fault`, `tests/integration/runtime`); each section\n"
    "by its test, at the scale it ran (`STREAMFOLD_TEST_SCALE`; full scale is 1.0).\n"
)


def write_section(name: str, title: str, body: str, scale: float) -> None:
    """Replace (or add) the section ``name`` of the report, at ``scale``."""
    name = f"{name}@{scale:g}"
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else HEADER
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (
        f"<!-- {name} -->\n## {title}\n\n_scale {scale:g}, {stamp}_\n\n{body.strip()}\n"
        f"<!-- /{name} -->\n"
    )
    pattern = re.compile(rf"<!-- {re.escape(name)} -->\n.*?<!-- /{re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text, encoding="utf-8")
