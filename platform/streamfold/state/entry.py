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

The recent results stay msgpack bytes in memory (:class:`Recent`): an entry is written on
every command, and packing its 32 results again each time cost more than the rest of the
entry (about 30 us for a full window, against a concatenation now); a repeat is found by
looking for the command id's bytes first, and the results are decoded only then. The bytes
are the same as before: an entry written either way reads either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from streamfold.errors import PermanentError

__all__ = ["AggregateEntry", "CorruptEntryError", "Recent", "StoredResult"]


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


def _array_header(n: int) -> bytes:
    """msgpack's array header for ``n`` elements, as ``packb`` writes it."""
    if n <= 15:
        return bytes((0x90 | n,))
    if n <= 0xFFFF:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _split_header(raw: bytes) -> tuple[int, int]:
    """The element count of a packed array and where its elements start."""
    first = raw[0]
    if first & 0xF0 == 0x90:
        return first & 0x0F, 1
    if first == 0xDC:
        return int.from_bytes(raw[1:3], "big"), 3
    if first == 0xDD:
        return int.from_bytes(raw[1:5], "big"), 5
    raise ValueError(f"the recent results are not an array (first byte {first:#x})")


@dataclass(frozen=True, slots=True)
class Recent:
    """The recent ``[command id, packed result]`` pairs of an entry, oldest first, kept as
    the msgpack array they are stored as (see the module docstring)."""

    raw: bytes = b"\x90"

    @classmethod
    def of(cls, pairs: Sequence[Sequence[Any]]) -> Recent:
        return cls(msgpack.packb([list(p) for p in pairs], use_bin_type=True))

    def __iter__(self) -> Iterator[list[Any]]:
        pairs: list[list[Any]] = msgpack.unpackb(self.raw, raw=False)
        return iter(pairs)

    def result_of(self, command_id: str) -> StoredResult | None:
        """The stored result of ``command_id``, if it is among these."""
        if command_id.encode() not in self.raw:  # the common case: a new command
            return None
        for known, packed in self:
            if known == command_id:
                return StoredResult.unpack(packed)
        return None

    def appended(self, command_id: str, result: StoredResult, window: int) -> Recent:
        """These and ``[command_id, result]``, only the last ``window`` kept."""
        if window <= 0:
            return _NONE
        count, start = _split_header(self.raw)
        body = memoryview(self.raw)[start:]
        drop = count + 1 - window
        if drop > 0:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(body)
            for _ in range(drop):
                unpacker.skip()
            body = body[unpacker.tell() :]
            count -= drop
        item = msgpack.packb([command_id, result.pack()], use_bin_type=True)
        return Recent(b"".join((_array_header(count + 1), body, item)))


_NONE = Recent()


@dataclass(frozen=True, slots=True)
class AggregateEntry:
    """An aggregate as stored: version, deleted flag, state wire bytes, recent results."""

    version: int = 0
    deleted: bool = False
    state: bytes | None = None
    #: The recent [command id, packed StoredResult] pairs, oldest first.
    recent: Recent = _NONE
    #: The tenant the aggregate belongs to (that of the command that created it).
    tenant: str | None = None
    #: Its timers: name -> due (ms since the epoch).
    timers: Mapping[str, int] = field(default_factory=dict)

    def result_of(self, command_id: str) -> StoredResult | None:
        """The stored result of ``command_id`` if it is among the recent commands."""
        return self.recent.result_of(command_id)

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
        recent = self.recent.appended(command_id, result, window)
        owner = self.tenant if self.version else tenant
        now = self.timers if timers is None else timers
        return AggregateEntry(version, deleted, state, recent, owner, now)

    def encode(self) -> bytes:
        extra = self.tenant is not None or bool(self.timers)
        parts = [
            _array_header(4 + extra + bool(self.timers)),
            # the three first fields: packed as a list, less the list's one-byte header
            msgpack.packb([self.version, self.deleted, self.state], use_bin_type=True)[1:],
            self.recent.raw,
        ]
        if extra:
            parts.append(msgpack.packb(self.tenant, use_bin_type=True))
        if self.timers:
            parts.append(msgpack.packb(dict(self.timers), use_bin_type=True))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> AggregateEntry:
        try:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(data)
            fields = unpacker.read_array_header()
            if not 4 <= fields <= 6:
                raise ValueError(f"{fields} fields, not 4 to 6")
            version, deleted, state = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
            start = unpacker.tell()
            unpacker.skip()
            recent = Recent(data[start : unpacker.tell()])
            _split_header(recent.raw)
            tenant = unpacker.unpack() if fields > 4 else None
            timers = unpacker.unpack() if fields > 5 else {}
            if unpacker.tell() != len(data):
                raise ValueError("unexpected bytes after the entry")
            if (
                not isinstance(version, int)
                or not (state is None or isinstance(state, bytes))
                or not (tenant is None or isinstance(tenant, str))
                or not isinstance(timers, dict)
            ):
                raise ValueError("a field of the wrong type")
            return cls(version, bool(deleted), state, recent, tenant, timers)
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise CorruptEntryError(f"not an aggregate entry ({len(data)} bytes): {exc}") from exc
