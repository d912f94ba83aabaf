"""BI reports: SQL files kept beside a connector spec, run against its target.

A report is ``connectors/<context>/reports/<n>_<name>.sql``: one query whose first line is a
``--`` comment giving its title, with ``{database}`` where the database goes (only that
placeholder is filled, and only with a checked identifier).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from streamfold.errors import ConfigurationError

__all__ = ["Report", "load_reports"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    title: str
    sql: str


def load_reports(directory: Path, database: str) -> list[Report]:
    """The reports of ``directory``, in file-name order, for ``database``."""
    if not _IDENTIFIER.match(database):
        raise ConfigurationError(f"database must be an identifier, not {database!r}")
    reports = []
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        first = text.splitlines()[0] if text else ""
        title = first[2:].strip() if first.startswith("--") else path.stem
        name = path.stem.split("_", 1)[-1]
        reports.append(Report(name, title, text.replace("{database}", f"`{database}`")))
    return reports
