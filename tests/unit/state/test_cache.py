"""The decoded-value cache in front of a partition's RocksDB store: coherent with commits,
aborts, restores and wipes, and bounded in bytes."""

from __future__ import annotations

import tracemalloc
import uuid
from pathlib import Path

import pytest
import rocksdict
from topologies.retail.domain import StoreStock

from streamfold.runtime.command_processor import _Loaded
from streamfold.state.cache import OVERHEAD, DecodedCache
from streamfold.state.entry import AggregateEntry, StoredResult
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

pytestmark = pytest.mark.unit


class Decoder:
    """Counts its calls; decodes to the text of the bytes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> str:
        self.calls += 1
        return raw.decode()


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    return PartitionStore(tmp_path / "p0", StoreEnvironment(RocksDBOptions(state_cache_mb=1)))


def test_a_committed_value_is_decoded_once(store: PartitionStore) -> None:
    store.stage(b"a", b"one")
    store.commit(1)
    decode = Decoder()
    assert store.get_decoded(b"a", decode) == "one"
    assert store.get_decoded(b"a", decode) == "one"
    assert decode.calls == 1
    assert store.get_decoded(b"missing", decode) is None


def test_a_staged_decoded_value_is_read_and_written_through_at_commit(
    store: PartitionStore,
) -> None:
    decode = Decoder()
    store.stage(b"a", b"one", "one, decoded")
    assert store.get_decoded(b"a", decode) == "one, decoded"
    store.commit(1)
    assert store.get_decoded(b"a", decode) == "one, decoded"
    assert decode.calls == 0
    assert store.get(b"a") == b"one"


def test_an_abort_leaves_the_committed_value(store: PartitionStore) -> None:
    decode = Decoder()
    store.stage(b"a", b"one", "one")
    store.commit(1)
    store.stage(b"a", b"two", "two")
    assert store.get_decoded(b"a", decode) == "two"
    store.discard()
    assert store.get_decoded(b"a", decode) == "one"
    assert decode.calls == 0


def test_a_value_staged_without_its_decoding_replaces_the_cached_one(
    store: PartitionStore,
) -> None:
    decode = Decoder()
    store.stage(b"a", b"one", "one")
    store.commit(1)
    store.stage(b"a", b"two")  # e.g. a timer's entry, staged as bytes only
    assert store.get_decoded(b"a", decode) == "two"
    store.commit(2)
    assert store.get_decoded(b"a", decode) == "two"
    assert decode.calls == 2  # once staged, once read from RocksDB after the commit
    store.stage(b"a", None)  # a delete
    store.commit(3)
    assert store.get_decoded(b"a", decode) is None


def test_a_restore_or_a_wipe_drops_the_stores_values(store: PartitionStore) -> None:
    decode = Decoder()
    store.stage(b"a", b"one", "one")
    store.commit(1)
    batch = rocksdict.WriteBatch(raw_mode=True)
    batch.put(b"a", b"restored")
    store.apply_restored(batch, 5)
    assert store.get_decoded(b"a", decode) == "restored"
    store.wipe()
    assert store.get_decoded(b"a", decode) is None
    assert decode.calls == 1


def test_two_stores_share_the_cache_but_not_their_values(tmp_path: Path) -> None:
    environment = StoreEnvironment(RocksDBOptions(state_cache_mb=1))
    first = PartitionStore(tmp_path / "p0", environment)
    second = PartitionStore(tmp_path / "p1", environment)
    first.stage(b"a", b"first", "first")
    first.commit(1)
    second.stage(b"a", b"second", "second")
    second.commit(1)
    decode = Decoder()
    assert first.get_decoded(b"a", decode) == "first"
    assert second.get_decoded(b"a", decode) == "second"
    assert decode.calls == 0 and len(environment.decoded) == 2


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    capacity = 10 * (OVERHEAD + 100 + 4)
    cache = DecodedCache(capacity)
    for n in range(10):
        cache.put(1, f"k{n:03d}".encode(), n, 100)
    assert len(cache) == 10 and cache.charged == capacity
    assert cache.get(1, b"k000") == 0  # used: now the most recent
    cache.put(1, b"k010", 10, 100)
    assert cache.charged <= capacity and len(cache) == 10
    assert cache.get(1, b"k001") is None  # the least recently used went
    assert cache.get(1, b"k000") == 0
    cache.put(1, b"huge", "x", capacity)  # larger than the whole cache: not kept
    assert cache.get(1, b"huge") is None and cache.charged <= capacity


def test_a_zero_sized_cache_keeps_nothing(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0", StoreEnvironment(RocksDBOptions(state_cache_mb=0)))
    store.stage(b"a", b"one", "one")
    store.commit(1)
    decode = Decoder()
    assert store.get_decoded(b"a", decode) == "one"
    assert store.get_decoded(b"a", decode) == "one"
    assert decode.calls == 2


def test_the_charge_per_value_covers_a_store_stock_aggregate() -> None:
    """OVERHEAD is an estimate of the objects of a cached value: for a retail store-stock
    aggregate with a full idempotency window, decoded from its bytes as the store does, the
    charge must not be below what the value takes."""
    cache = DecodedCache(1 << 34)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    charged = 0
    for n in range(1_000):
        entry = AggregateEntry()
        for version in range(1, 33):
            entry = entry.after(
                version=version,
                deleted=False,
                state=b"\x00" * 60,
                command_id=str(uuid.uuid4()),
                result=StoredResult("accepted", version, ("SaleRecorded",)),
                window=32,
                tenant="tenant-a",
            )
        encoded = entry.encode()
        state = StoreStock(store_id=f"store-{n % 97}", item_id=f"item-{n}", on_hand=n)
        key = f"store-{n % 97}/item-{n}".encode()
        cache.put(1, key, _Loaded(AggregateEntry.decode(encoded), state, True), len(encoded))
        charged += len(encoded) + len(key) + OVERHEAD
        del entry, encoded, state
    taken = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert cache.charged == charged
    assert 0.7 * charged <= taken <= charged, (taken, charged)
