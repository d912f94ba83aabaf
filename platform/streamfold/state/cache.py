"""Decoded values of committed store entries, in memory, in front of RocksDB.

Kafka Streams puts a record cache in front of its stores; this is ours, for the command
processor's hot path: a hit skips the RocksDB get, the entry's msgpack decode and the state's
Avro decode. It holds only what is committed: a value enters when it is read from RocksDB or
when the WriteBatch carrying it is written (write-through at commit), so an aborted
transaction has nothing to take back, and a store that is wiped, restored into or closed
drops its values (:class:`~streamfold.state.rocksdb.PartitionStore` keeps it coherent: it
reads and writes under a token it renews then, so the old values are never read again and
age out).

One cache serves every store of a process, bounded in bytes: each value is charged the size
of its encoded entry plus :data:`OVERHEAD` for the Python objects around it (an estimate, as
Kafka Streams charges serialized sizes), and the least recently used values go first.

The decoded values are shared: whoever reads one must not change it. The processor's values
are frozen (an :class:`~streamfold.state.entry.AggregateEntry` and a frozen pydantic state),
and a decide or evolve function that changed the state it is given in place (a list inside
it, say) would break its own purity anyway; with the cache it would also be seen by the next
command. ``rocksdb.state_cache_mb: 0`` turns the cache off.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OVERHEAD", "DecodedCache"]

#: Bytes charged per value beyond its encoded size: the dict slot, the key, the decoded
#: entry and state objects. Measured with tracemalloc for a retail store-stock aggregate
#: with a full window of 32 results (2,189 encoded bytes): 3,485 bytes a value, so about
#: 1,280 beyond the encoded size (tests/unit/state/test_cache.py checks the charge covers it).
OVERHEAD = 1_500


class DecodedCache:
    """LRU of decoded values by (store, key), bounded by ``capacity`` charged bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.charged = 0
        self.hits = 0
        self.misses = 0
        self._values: dict[tuple[int, bytes], tuple[Any, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, store: int, key: bytes) -> Any | None:
        """The decoded value, made the most recently used; None when absent."""
        slot = (store, key)
        found = self._values.pop(slot, None)
        if found is None:
            self.misses += 1
            return None
        self._values[slot] = found  # to the end: most recently used
        self.hits += 1
        return found[0]

    def put(self, store: int, key: bytes, value: Any, encoded_size: int) -> None:
        """Keep ``value`` (not None), evicting the least recently used beyond capacity."""
        if not self.enabled:
            return
        slot = (store, key)
        charge = encoded_size + len(key) + OVERHEAD
        old = self._values.pop(slot, None)
        if old is not None:
            self.charged -= old[1]
        if charge > self.capacity:
            return
        self._values[slot] = (value, charge)
        self.charged += charge
        while self.charged > self.capacity:
            oldest = next(iter(self._values))
            self.charged -= self._values.pop(oldest)[1]

    def drop(self, store: int, key: bytes) -> None:
        old = self._values.pop((store, key), None)
        if old is not None:
            self.charged -= old[1]
