"""The partition store on real RocksDB: staged writes, commit with offset, discard, restore."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamfold.state.entry import AggregateEntry, StoredResult
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

pytestmark = pytest.mark.unit


@pytest.fixture
def environment() -> StoreEnvironment:
    return StoreEnvironment(RocksDBOptions(block_cache_mb=8, write_buffer_mb=8))


def test_staged_writes_are_visible_to_get_but_not_stored_until_commit(
    tmp_path: Path, environment: StoreEnvironment
) -> None:
    store = PartitionStore(tmp_path / "p0", environment)
    store.stage(b"a", b"1")
    assert store.get(b"a") == b"1"
    assert list(store.items()) == []
    store.commit(41)
    assert list(store.items()) == [(b"a", b"1")]
    assert store.changelog_offset == 41
    store.stage(b"a", b"2")
    store.stage(b"b", b"3")
    store.discard()
    assert store.get(b"a") == b"1"
    assert store.get(b"b") is None
    store.flush()
    store.close()
    reopened = PartitionStore(tmp_path / "p0", environment)
    assert reopened.changelog_offset == 41
    assert reopened.get(b"a") == b"1"
    reopened.close()


def test_restore_batches_apply_records_and_tombstones_with_the_offset(
    tmp_path: Path, environment: StoreEnvironment
) -> None:
    store = PartitionStore(tmp_path / "p1", environment)
    store.restore_batch([(b"a", b"1"), (b"b", b"2"), (b"a", None)], last_offset=9)
    assert dict(store.items()) == {b"b": b"2"}
    assert store.changelog_offset == 9
    other = PartitionStore(tmp_path / "p2", environment)
    other.restore_batch([(b"b", b"2")], last_offset=3)
    assert other.digest() == store.digest()
    store.wipe()
    assert list(store.items()) == []
    assert store.changelog_offset is None
    store.close()
    other.close()


def test_entries_remember_a_bounded_window_of_results() -> None:
    entry = AggregateEntry()
    for n in range(5):
        entry = entry.after(
            version=n + 1,
            deleted=False,
            state=b"s",
            command_id=f"c{n}",
            result=StoredResult("accepted", n + 1, ("E",)),
            window=3,
        )
    decoded = AggregateEntry.decode(entry.encode())
    assert decoded == entry
    assert decoded.result_of("c1") is None  # fell out of the window
    assert decoded.result_of("c4") == StoredResult("accepted", 5, ("E",))
    assert [c for c, _ in decoded.recent] == ["c2", "c3", "c4"]


def _level0_files(store: PartitionStore) -> int:
    return int(store._db.property_int_value("rocksdb.num-files-at-level0") or 0)


def test_a_restore_defers_level0_compactions_until_it_ends(
    tmp_path: Path, environment: StoreEnvironment
) -> None:
    """While restoring, flushed files wait for the raised trigger; after, RocksDB's own (4)
    applies again and the files left behind are compacted in the background."""
    store = PartitionStore(tmp_path / "p0", environment)
    store.begin_restore()
    for flush in range(8):
        store.restore_batch([(f"k{flush}-{i}".encode(), b"v" * 100) for i in range(50)], flush)
        store.flush()
    assert _level0_files(store) == 8
    store.end_restore()
    store.restore_batch([(b"last", b"v")], 8)
    store.flush()  # a flush lets RocksDB schedule the compaction the new triggers call for
    deadline = time.monotonic() + 20
    while _level0_files(store) >= 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _level0_files(store) < 4
    assert store.get(b"k0-0") == b"v" * 100
    assert store.changelog_offset == 8
    store.close()
