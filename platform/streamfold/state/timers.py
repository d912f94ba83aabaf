"""Durable timers in a partition store: the index keys that order them by due time.

A processor that keeps timers (a saga, an aggregate) stores each one twice: in the entry of
its owner (name -> due, ms since the epoch) and as an index key ``\\x00t`` + due (8 bytes,
big-endian) + owner key + ``\\x00`` + name, with an empty value. The index keys sort by due
time, so the timers due now are a range scan; both writes are staged with the input that
sets or fires the timer, so they reach the changelog and the store with it.
"""

from __future__ import annotations

import struct

from streamfold.state.rocksdb import PartitionStore

__all__ = ["TIMER_PREFIX", "due_timers", "parse_timer_key", "stage_timers", "timer_key"]

TIMER_PREFIX = b"\x00t"
_DUE = struct.Struct(">Q")


def timer_key(due_ms: int, owner: bytes, name: str) -> bytes:
    """The index key of ``owner``'s timer ``name``, due at ``due_ms``."""
    return TIMER_PREFIX + _DUE.pack(due_ms) + owner + b"\x00" + name.encode()


def parse_timer_key(key: bytes) -> tuple[int, bytes, str]:
    """(due ms, owner key, name) of an index key."""
    (due,) = _DUE.unpack_from(key, len(TIMER_PREFIX))
    owner, _, name = key[len(TIMER_PREFIX) + _DUE.size :].rpartition(b"\x00")
    return due, owner, name.decode()


def due_timers(store: PartitionStore, now_ms: int, limit: int) -> list[bytes]:
    """The index keys of up to ``limit`` timers due at ``now_ms``, earliest first."""
    keys = []
    for key, _value in store.scan(TIMER_PREFIX, TIMER_PREFIX + _DUE.pack(now_ms + 1)):
        keys.append(key)
        if len(keys) >= limit:
            break
    return keys


def stage_timers(
    store: PartitionStore, owner: bytes, before: dict[str, int], after: dict[str, int]
) -> None:
    """Stage the index keys that take ``owner``'s timers from ``before`` to ``after``."""
    for name, due in before.items():
        if after.get(name) != due:
            store.stage(timer_key(due, owner, name), None)
    for name, due in after.items():
        if before.get(name) != due:
            store.stage(timer_key(due, owner, name), b"")
