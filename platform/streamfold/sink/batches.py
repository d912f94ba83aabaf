"""Batches of the sink: the ranges it makes durable together, and the intents that let a
restarted sink make exactly the same batches again (see :mod:`streamfold.sink.connector`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ack", "Batch", "Intent", "Pending", "intended_last", "intent", "parse_intent"]

_INTENT = "streamfold.sink:"


@dataclass(frozen=True, slots=True)
class Intent:
    """What a partition's committed offset metadata says was being inserted: the range up to
    ``last``, as one of the ``members`` ranges of the batch ``group`` (None: a batch of its
    own)."""

    last: int
    group: str | None = None
    members: int = 1

    def metadata(self) -> str:
        if self.group is None:
            return f"{_INTENT}{self.last}"
        return f"{_INTENT}{self.last}:{self.group}:{self.members}"


def intent(last: int, group: str | None = None, members: int = 1) -> str:
    """The offset metadata that records the intent to insert a range ending at ``last``."""
    return Intent(last, group, members).metadata()


def parse_intent(metadata: str | None) -> Intent | None:
    """The intent an offset's metadata records, if any."""
    if not metadata or not metadata.startswith(_INTENT):
        return None
    last, _, rest = metadata[len(_INTENT) :].partition(":")
    if not rest:
        return Intent(int(last))
    group, _, members = rest.partition(":")
    return Intent(int(last), group, int(members))


def intended_last(metadata: str | None) -> int | None:
    """The last offset of the range an offset's metadata says was being inserted, if any."""
    found = parse_intent(metadata)
    return found.last if found is not None else None


@dataclass(frozen=True, slots=True)
class Ack:
    """A command whose projection is durable: its new state, or its rejection."""

    command_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    outcome: str


@dataclass(slots=True)
class Pending:
    """Rows read from one partition and not yet durable, held as columns (or framed).

    ``columns`` has one list per column of the source's tables except ``_topic`` and
    ``_partition`` (the same for every row of a partition: :meth:`Batch.columns` adds them),
    in table order; the last list holds the ``_offset`` of each row. Columns, not rows: a
    row builder appends each value where the insert needs it (no transposition per flush),
    and a batch keeps no per-row object alive for the garbage collector to walk.
    ``append`` holds the lists' ``append`` methods, in the same order, for the builders.
    """

    width: int = 0
    first: int = -1
    last: int = -1
    since: float = 0.0
    acks: list[Ack] = field(default_factory=list)
    columns: list[list[Any]] = field(init=False)
    append: tuple[Callable[[Any], None], ...] = field(init=False)
    #: Framed rows by writer schema id (width 0: :mod:`streamfold.sink.passthrough`), how
    #: many, and whether one of them needs the Python path. Bytes only: a framed batch keeps
    #: no Kafka message object alive for the garbage collector to walk.
    frames: dict[int, list[bytes]] = field(default_factory=dict)
    framed: int = 0
    python: bool = False

    def __post_init__(self) -> None:
        self.columns = [[] for _ in range(self.width)]
        self.append = tuple(column.append for column in self.columns)

    @property
    def rows(self) -> int:
        return len(self.columns[-1]) if self.columns else self.framed


@dataclass(slots=True)
class Batch:
    """The ranges of one source topic that go into its tables as one insert per table.

    Its token is the token of one range when it has one member, else derived from every
    member's range (:attr:`group`): a replay that re-forms the same ranges sends the same
    tokens.
    """

    topic: str
    members: list[tuple[int, Pending]]  # (partition, its rows), by partition

    @property
    def group(self) -> str | None:
        if len(self.members) == 1:
            return None
        ranges = ",".join(f"{p}:{b.first}-{b.last}" for p, b in self.members)
        return hashlib.sha256(f"{self.topic}|{ranges}".encode()).hexdigest()[:20]

    def token(self, connector: str, table: str) -> str:
        group = self.group
        if group is None:
            partition, pending = self.members[0]
            return f"{connector}:{table}:{self.topic}:{partition}:{pending.first}-{pending.last}"
        return f"{connector}:{table}:{self.topic}:g{group}"

    def columns(self) -> list[list[Any]]:
        """The columns of every member's rows, ``_topic`` and ``_partition`` filled in: in
        the order of the source's tables' columns."""
        members = [(p, m) for p, m in self.members if m.rows]
        if not members:
            return []
        if len(members) == 1:
            partition, pending = members[0]
            columns = pending.columns
            partitions = [partition] * pending.rows
        else:
            columns = []
            for index in range(len(members[0][1].columns)):
                joined: list[Any] = []
                for _, pending in members:
                    joined += pending.columns[index]
                columns.append(joined)
            partitions = []
            for partition, pending in members:
                partitions += [partition] * pending.rows
        count = len(partitions)
        return [*columns[:-1], [self.topic] * count, partitions, columns[-1]]
