"""A sink's source topics, and how a batch's rows reach a table: framed or decoded.

A :class:`Source` is one topic the sink reads: how it builds rows, the tables they go to,
and (events and state) the :class:`~streamfold.sink.passthrough.Framer` that frames its
records for ClickHouse to decode. :class:`BatchRows` is one batch of a source: framed parts
when the target decodes Avro and the batch is large enough, else columns decoded in Python
(built once, for every table, when first needed), so the sink's loop
(:mod:`streamfold.sink.connector`) never chooses the insert path itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamfold.sink.batches import Batch, Pending
from streamfold.sink.ddl import TableSpec
from streamfold.sink.passthrough import AvroPart, Framer
from streamfold.sink.rows import RowBuilder, row_width

__all__ = ["FRAMED_MIN_ROWS", "BatchRows", "Source"]

#: Below this many rows a framed batch is inserted decoded in Python: in chDB here a framed
#: insert of 100 rows took 11-16 ms (state_last) and 15-22 ms (events), an Arrow insert of
#: the decoded rows 7-12 ms; Python decodes ~13 µs a row, so the framed path wins from
#: about 500 rows.
FRAMED_MIN_ROWS = 500


@dataclass(slots=True)
class Source:
    """One source topic: how to build its rows, and the tables they go to.

    With a ``framer`` (events and state) records are framed for ClickHouse to decode
    (:mod:`streamfold.sink.passthrough`), and ``build`` decodes them in Python only for a
    batch the framed path cannot take.
    """

    build: RowBuilder
    tables: tuple[TableSpec, ...]
    #: How many of ``tables`` (the first ones) the acks of its rows stand for.
    acked_by: int = 0
    framer: Framer | None = None
    #: Its place in a flush: the state is inserted first (most acks wait for state_last).
    order: int = 0
    #: How many columns its rows hold while pending (:func:`~streamfold.sink.rows.row_width`).
    width: int = 0

    def __post_init__(self) -> None:
        widths = {row_width(t) for t in self.tables}
        if len(widths) != 1:
            raise ValueError(f"the tables {[t.name for t in self.tables]} differ in columns")
        self.width = widths.pop()

    def pending(self, first: int = -1, since: float = 0.0) -> Pending:
        return Pending(0 if self.framer is not None else self.width, first=first, since=since)

    @property
    def read(self) -> RowBuilder:
        """What reads a record into a :class:`Pending`: the framer, if the source has one."""
        return self.framer.build if self.framer is not None else self.build


class BatchRows:
    """One batch's rows for the source's tables: framed parts, or columns decoded in Python
    (built once, for every table, when first needed)."""

    def __init__(self, source: Source, batch: Batch) -> None:
        self.source = source
        self.batch = batch
        self.python = source.framer is None
        self._columns: list[list[Any]] | None = None

    @property
    def count(self) -> int:
        return sum(pending.rows for _, pending in self.batch.members)

    def parts(self, table: int) -> list[AvroPart] | None:
        if self.python or self.source.framer is None:
            return None
        if self.count < FRAMED_MIN_ROWS:  # a small batch: the fixed cost of a file dominates
            self.python = True
            return None
        parts = self.source.framer.parts([m for _, m in self.batch.members], table)
        if parts is None:
            self.python = True
        return parts

    def columns(self) -> list[list[Any]]:
        if self._columns is None:
            if self.source.framer is None:
                self._columns = self.batch.columns()
            else:
                decoded = []
                framer = self.source.framer
                for partition, framed in self.batch.members:
                    rows = Pending(self.source.width, first=framed.first, last=framed.last)
                    for message in framer.messages(framed):
                        self.source.build(message, message.offset() or 0, rows)
                    decoded.append((partition, rows))
                self._columns = Batch(self.batch.topic, decoded).columns()
        return self._columns
