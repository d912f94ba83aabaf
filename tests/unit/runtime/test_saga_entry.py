"""The pure parts of the saga processor's store layout (SagaEntry, timer index keys) and the
PartitionStore scan it reads due timers with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from streamfold.runtime.saga_processor import (
    CorruptSagaEntryError,
    SagaEntry,
    parse_timer_key,
    timer_key,
)
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

pytestmark = pytest.mark.unit


# --- SagaEntry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        SagaEntry(),
        SagaEntry(b"\x00avro\xff", {"remind": 1_780_000_000_000, "a.b-c": 0}, "acme", "corr-1"),
        SagaEntry(None, {"t": 2**63}, None, "c"),
    ],
)
def test_a_saga_entry_round_trips(entry: SagaEntry) -> None:
    raw = entry.encode()
    assert isinstance(raw, bytes)
    decoded = SagaEntry.decode(raw)
    assert decoded == entry
    assert decoded.encode() == raw


def test_a_saga_entry_is_msgpack_of_a_four_item_list() -> None:
    raw = SagaEntry(b"s", {"t": 5}, "acme", "corr").encode()
    assert msgpack.unpackb(raw, raw=False) == [b"s", {"t": 5}, "acme", "corr"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        SagaEntry(b"state", {"t": 1}).encode()[:-3],  # truncated
        SagaEntry().encode() + b"\x00",  # trailing data
        msgpack.packb(7),
        msgpack.packb([b"s", {}, None]),
        msgpack.packb([b"s", {}, None, None, None]),
        msgpack.packb([b"s", 5, None, None]),
        msgpack.packb([b"s", [1, 2], None, None]),
    ],
)
def test_bytes_that_are_not_a_saga_entry_are_corrupt(raw: bytes) -> None:
    with pytest.raises(CorruptSagaEntryError, match="not a saga entry"):
        SagaEntry.decode(raw)


def test_well_formed_msgpack_with_wrong_types_is_corrupt() -> None:
    with pytest.raises(CorruptSagaEntryError):
        SagaEntry.decode(msgpack.packb([123, {"t": "soon"}, None, None]))


# --- timer index keys -------------------------------------------------------------------


def test_timer_keys_sort_by_due_time_whatever_the_saga_id_or_name() -> None:
    keys = [
        timer_key(256, b"a", "x"),
        timer_key(255, b"zzz", "z"),
        timer_key(2**40, b"\x00", "a"),
        timer_key(1, b"~~~~", "zz"),
        timer_key(65_536, b"b", "y"),
    ]
    assert [parse_timer_key(k)[0] for k in sorted(keys)] == [1, 255, 256, 65_536, 2**40]


def test_timer_keys_of_one_due_time_sort_by_saga_id() -> None:
    assert sorted([timer_key(5, b"b", "a"), timer_key(5, b"a", "z")]) == [
        timer_key(5, b"a", "z"),
        timer_key(5, b"b", "a"),
    ]


def test_a_timer_key_is_the_prefix_the_big_endian_due_the_saga_id_and_the_name() -> None:
    assert timer_key(0x0102, b"s-1", "remind") == (
        b"\x00t" + b"\x00\x00\x00\x00\x00\x00\x01\x02" + b"s-1" + b"\x00" + b"remind"
    )


@pytest.mark.parametrize(
    ("due", "saga_id", "name"),
    [
        (1_780_000_000_123, b"store/7/apple", "payment_due"),
        (0, b"a/b/c/", "x"),
        (2**64 - 1, "café/☕".encode(), "a.b-c_9"),
        (42, b"with\x00nul", "t"),
    ],
)
def test_a_timer_key_parses_back(due: int, saga_id: bytes, name: str) -> None:
    assert parse_timer_key(timer_key(due, saga_id, name)) == (due, saga_id, name)


# --- PartitionStore.scan and staged_items -----------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PartitionStore]:
    environment = StoreEnvironment(RocksDBOptions(block_cache_mb=8, write_buffer_mb=8))
    partition = PartitionStore(tmp_path / "p0", environment)
    yield partition
    partition.close()


def test_scan_yields_committed_keys_in_range_in_order_with_an_exclusive_end(
    store: PartitionStore,
) -> None:
    for key in (b"b", b"a", b"c", b"d", b"ca"):
        store.stage(key, key.upper())
    store.commit(1)
    assert list(store.scan(b"b", b"d")) == [(b"b", b"B"), (b"c", b"C"), (b"ca", b"CA")]
    assert list(store.scan(b"a", b"a")) == []
    assert list(store.scan(b"e", b"z")) == []
    assert [k for k, _ in store.scan(b"a", b"\xff")] == [b"a", b"b", b"c", b"ca", b"d"]


def test_scan_skips_the_internal_keys_like_items(store: PartitionStore) -> None:
    store.stage(b"a", b"A")
    store.commit(1)
    assert list(store.items()) == [(b"a", b"A")]
    assert list(store.scan(b"", b"\xff")) == [(b"a", b"A")]


def test_scan_hides_keys_a_staged_write_deletes_or_replaces_and_skips_staged_puts(
    store: PartitionStore,
) -> None:
    for key in (b"a", b"b", b"c"):
        store.stage(key, b"1")
    store.commit(1)
    store.stage(b"a", None)
    store.stage(b"b", b"2")
    store.stage(b"bb", b"new")
    assert list(store.scan(b"a", b"z")) == [(b"c", b"1")]
    store.discard()
    assert [k for k, _ in store.scan(b"a", b"z")] == [b"a", b"b", b"c"]


def test_scan_of_the_timer_index_finds_timers_due_by_a_time(store: PartitionStore) -> None:
    for due, saga_id in ((30, b"s/3"), (10, b"s/1"), (20, b"s/2"), (31, b"s/4")):
        store.stage(timer_key(due, saga_id, "t"), b"")
    store.stage(b"s/1", b"entry")  # an instance entry, outside the index
    store.commit(1)
    prefix = b"\x00t"
    stop = prefix + (30 + 1).to_bytes(8, "big")
    due = [parse_timer_key(k) for k, _ in store.scan(prefix, stop)]
    assert due == [(10, b"s/1", "t"), (20, b"s/2", "t"), (30, b"s/3", "t")]
    store.stage(timer_key(10, b"s/1", "t"), None)
    assert [d for d, _, _ in (parse_timer_key(k) for k, _ in store.scan(prefix, stop))] == [20, 30]


def test_staged_items_list_puts_and_deletes_in_first_staged_order(
    store: PartitionStore,
) -> None:
    store.stage(b"b", b"1")
    store.stage(b"a", None)
    store.stage(b"c", b"3")
    store.stage(b"b", b"2")
    assert store.staged_items() == [(b"b", b"2"), (b"a", None), (b"c", b"3")]
    assert store.staged == 3
    store.commit(2)
    assert store.staged_items() == []
