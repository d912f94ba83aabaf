"""One aggregate's store entry: the value under its id in the store and in the changelog.

An entry holds the aggregate's version, its deleted flag, its state as Avro wire bytes (the
same bytes the state topic carries, schema id included, so a later reader schema still
resolves them), and the results of its most recent commands.

Idempotency: the entry keeps the last ``window`` command ids of its aggregate with their
results (default 32, ``WorkerSettings.idempotency_window``). A command whose id is among them
gets that first result again and has no effect. The bound is per aggregate and permanent in
time: a retry is recognised however late it comes, as long as fewer than ``window`` other
commands reached the same aggregate in between. Beyond that the id is forgotten and the
command is decided again (a command carrying ``expected_version`` is then rejected with
``version_conflict``, so use it where a late duplicate must never act twice). The bound keeps
an entry's size, and so the changelog's, proportional to the aggregate, not to its history.

Tenant: the entry keeps the ``tenant`` header of the command that created the aggregate
(None when it had none); every later command must carry the same tenant.

Timers: an aggregate that sets timers keeps them here too (name -> due, ms since the epoch;
see :mod:`streamfold.state.timers`).

Encoding: msgpack of ``[version, deleted, state, [[command_id, result...], ...], tenant]``,
with ``timers`` as a sixth element when there are any (entries written before tenants
were kept have four elements: tenant None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from streamfold.errors import PermanentError

__all__ = ["AggregateEntry", "CorruptEntryError", "StoredResult"]


class CorruptEntryError(PermanentError):
    """A store or changelog value that is not an aggregate entry."""


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A command's result as the entry remembers it (enough to answer a repeat)."""

    outcome: str  # accepted | rejected
    version: int  # after the command (accepted) or the current one (rejected)
    event_types: tuple[str, ...] = ()
    code: str | None = None
    message: str | None = None

    def pack(self) -> list[Any]:
        return [self.outcome, self.version, list(self.event_types), self.code, self.message]

    @classmethod
    def unpack(cls, raw: list[Any]) -> StoredResult:
        outcome, version, event_types, code, message = raw
        return cls(outcome, version, tuple(event_types), code, message)


@dataclass(frozen=True, slots=True)
class AggregateEntry:
    """An aggregate as stored: version, deleted flag, state wire bytes, recent results."""

    version: int = 0
    deleted: bool = False
    state: bytes | None = None
    #: [command id, packed StoredResult] pairs, oldest first (lists, as msgpack decodes them).
    recent: tuple[Sequence[Any], ...] = ()
    #: The tenant the aggregate belongs to (that of the command that created it).
    tenant: str | None = None
    #: Its timers: name -> due (ms since the epoch).
    timers: Mapping[str, int] = field(default_factory=dict)

    def result_of(self, command_id: str) -> StoredResult | None:
        """The stored result of ``command_id`` if it is among the recent commands."""
        for known, packed in self.recent:
            if known == command_id:
                return StoredResult.unpack(packed)
        return None

    def after(
        self,
        *,
        version: int,
        deleted: bool,
        state: bytes | None,
        command_id: str,
        result: StoredResult,
        window: int,
        tenant: str | None = None,
        timers: Mapping[str, int] | None = None,
    ) -> AggregateEntry:
        """The entry after a command: new version and state, its result remembered (a new
        aggregate takes ``tenant``; an existing one keeps its own), its timers ``timers``
        (unchanged when None)."""
        recent = (*self.recent, [command_id, result.pack()])
        owner = self.tenant if self.version else tenant
        kept = recent[-window:] if window else ()
        now = self.timers if timers is None else timers
        return AggregateEntry(version, deleted, state, kept, owner, now)

    def encode(self) -> bytes:
        fields: list[Any] = [self.version, self.deleted, self.state, self.recent]
        if self.tenant is not None or self.timers:
            fields.append(self.tenant)
        if self.timers:
            fields.append(dict(self.timers))
        return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> AggregateEntry:
        try:
            version, deleted, state, recent, *rest = msgpack.unpackb(data, raw=False)
            tenant = rest[0] if rest else None
            timers = rest[1] if len(rest) > 1 else {}
            if (
                len(rest) > 2
                or not (tenant is None or isinstance(tenant, str))
                or not isinstance(timers, dict)
            ):
                raise ValueError("unexpected fields after the recent results")
            return cls(version, deleted, state, tuple(recent), tenant, timers)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptEntryError(f"not an aggregate entry ({len(data)} bytes): {exc}") from exc
