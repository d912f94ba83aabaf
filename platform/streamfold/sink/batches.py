"""Batches of the sink: the ranges it makes durable together, and the intents that let a
restarted sink make exactly the same batches again (see :mod:`streamfold.sink.connector`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from streamfold.sink.rows import Ack

__all__ = ["Batch", "Intent", "Pending", "intended_last", "intent", "parse_intent"]

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


@dataclass(slots=True)
class Pending:
    """Rows read from one partition and not yet durable."""

    first: int = -1
    last: int = -1
    since: float = 0.0
    rows: list[list[Any]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)


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

    def rows(self) -> list[list[Any]]:
        if len(self.members) == 1:
            return self.members[0][1].rows
        return [row for _, pending in self.members for row in pending.rows]
