"""An in-memory :class:`~streamfold.sink.target.SinkTarget`: the rows a sink would project.

It keeps each table's rows as tuples in ``table.columns`` order, in insertion order, and
drops an insert whose token the table has seen, as ClickHouse's insert deduplication does.
It decodes no Avro (``decodes_avro`` is false), so a sink in front of it decodes every batch
in Python. For tests of a sink's protocol (replays, deduplication, acks) that need no SQL,
and to prove that the sink depends only on the seam.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from streamfold.sink.ddl import TableSpec
from streamfold.sink.passthrough import AvroPart
from streamfold.sink.target import TargetError, TargetUnavailableError
from streamfold.sink.types import identifier

__all__ = ["RecordingTarget"]


class RecordingTarget:
    """Tables and rows in memory; ``available = False`` makes every call unavailable."""

    decodes_avro = False

    def __init__(self, database: str = "recording") -> None:
        self.database = identifier(database, "database")
        self.tables: dict[str, TableSpec] = {}
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.statements: list[str] = []  # the extra SQL it was given, kept, never run
        self.available = True
        self._tokens: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory:{self.database}"

    def _check(self, doing: str) -> None:
        if not self.available:
            raise TargetUnavailableError(f"recording target unavailable while {doing}")

    def ensure(self, tables: Sequence[TableSpec], extra_sql: Sequence[str] = ()) -> list[str]:
        with self._lock:
            self._check("creating the tables")
            added: list[str] = []
            for table in tables:
                known = self.tables.get(table.name)
                if known is not None:
                    added += self._evolve(known, table)
                self.tables[table.name] = table
                self.rows.setdefault(table.name, [])
                self._tokens.setdefault(table.name, set())
            self.statements += extra_sql
            return added

    def _evolve(self, known: TableSpec, table: TableSpec) -> list[str]:
        """Give the rows of ``known`` the columns of ``table``: a new one holds None."""
        before = [c.name for c in known.columns]
        after = [c.name for c in table.columns]
        rows = self.rows[table.name]
        self.rows[table.name] = [
            tuple(dict(zip(before, row, strict=True)).get(name) for name in after) for row in rows
        ]
        return [f"{table.name}.{name}" for name in after if name not in before]

    def _table(self, table: TableSpec) -> str:
        if table.name not in self.tables:
            raise TargetError(f"table {self.database}.{table.name} does not exist")
        return table.name

    def holds(self, table: TableSpec, topic: str, partition: int, first: int, last: int) -> bool:
        with self._lock:
            self._check(f"reading {table.name}")
            name = self._table(table)
            columns = [c.name for c in self.tables[name].columns]
            at = columns.index("_topic"), columns.index("_partition"), columns.index("_offset")
            return any(
                row[at[0]] == topic and row[at[1]] == partition and first <= row[at[2]] <= last
                for row in self.rows[name]
            )

    def insert_columns(
        self, table: TableSpec, columns: Sequence[Sequence[Any]], token: str
    ) -> None:
        with self._lock:
            self._check(f"inserting into {table.name}")
            name = self._table(table)
            if not columns or not columns[0]:
                return
            if len(columns) != len(table.columns):
                raise TargetError(
                    f"inserting into {name}: {len(columns)} columns for {len(table.columns)}"
                )
            if token in self._tokens[name]:
                return  # a retried batch: dropped, as ClickHouse drops it
            self._tokens[name].add(token)
            self.rows[name] += zip(*columns, strict=True)

    def insert_avro(self, table: TableSpec, parts: Sequence[AvroPart], token: str) -> None:
        raise TargetError("the recording target decodes no Avro (decodes_avro is false)")

    def close(self) -> None:
        pass
