"""A partition's aggregate store in RocksDB (rocksdict), with staged, transactional writes.

Writes follow the worker's transaction (see :mod:`streamfold.runtime.worker`):

1. :meth:`PartitionStore.stage` keeps a write in memory; :meth:`PartitionStore.get` sees it,
   RocksDB does not;
2. after the Kafka transaction carrying the matching changelog records commits,
   :meth:`PartitionStore.commit` writes every staged value AND the offset of the last
   changelog record in ONE WriteBatch;
3. after an abort, :meth:`PartitionStore.discard` drops them.

So the store never holds an uncommitted write, and its changelog offset says exactly how far
it is: restoring reads the changelog from the next offset (:meth:`restore_batch`). A crash
between 2's commit and its WriteBatch loses nothing: those records are in the changelog.

Memory is bounded by :class:`RocksDBOptions`: one block cache and one write-buffer budget
shared by every store of the process (:class:`StoreEnvironment`), and in front of RocksDB one
cache of decoded committed values (:mod:`streamfold.state.cache`): read with
:meth:`PartitionStore.get_decoded`, filled by :meth:`PartitionStore.stage` with the decoded
value.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import rocksdict
from pydantic import BaseModel, ConfigDict, Field

from streamfold.errors import PermanentError
from streamfold.state.cache import DecodedCache

__all__ = ["PartitionStore", "RocksDBOptions", "StoreEnvironment", "StoreError"]

#: The key of the changelog offset; aggregate ids never start with a NUL byte.
OFFSET_KEY = b"\x00streamfold.changelog_offset"
#: The key of the id of the changelog topic the store was filled from.
CHANGELOG_ID_KEY = b"\x00streamfold.changelog_id"
_INTERNAL = (OFFSET_KEY, CHANGELOG_ID_KEY)
#: Tokens under which a store's values are cached (a new one each time its values change
#: outside a transaction: the old ones are never read again).
_TOKENS = itertools.count(1)
_NOT_STAGED = object()
T = TypeVar("T")


#: RocksDB's own L0 triggers (compaction, write slowdown, write stop), restored after a restore.
_DEFAULT_L0_TRIGGERS = (4, 20, 36)


class StoreError(PermanentError):
    """The local store cannot be opened or written."""


class RocksDBOptions(BaseModel):
    """RocksDB tuning shared by every store of a worker process (memory caps in MiB)."""

    model_config = ConfigDict(frozen=True)

    #: Blocks and (charged to it) the memtables of every store. With 1M aggregates in
    #: state a worker's RSS peaked at 254 MB with 64 (benchmarks/reports/worker.md).
    block_cache_mb: int = Field(default=48, ge=1)
    #: Memtables of all stores together; they are charged to the block cache too.
    write_buffer_mb: int = Field(default=32, ge=1)
    write_buffer_per_store_mb: int = Field(default=8, ge=1)
    max_open_files: int = Field(default=256, ge=-1)
    compression: bool = True
    #: While a store restores, flushed L0 files are compacted only once this many wait
    #: (RocksDB's default, 4, applies again once the restore ends), with the write-stall
    #: triggers raised to match. A restore writes every record of a changelog at once, and
    #: compacting every 4 flushes re-read the growing L1 again and again: measured in
    #: isolation with 1M entries of 370 bytes written into one store in batches of 10,000,
    #: ``write`` cost 5.1 us per record with the default trigger, 1.9 us with 16 (the
    #: restore's rate: benchmarks/worker_bench.py section 3). At most about this many L0
    #: files are left behind, which RocksDB compacts in the background.
    restore_l0_compaction_trigger: int = Field(default=16, ge=2)
    #: The decoded values of committed entries kept in memory in front of RocksDB, for all
    #: stores together (:mod:`streamfold.state.cache`; charged as encoded size plus an
    #: estimate of the objects); 0 turns it off.
    state_cache_mb: int = Field(default=16, ge=0)


class StoreEnvironment:
    """The block cache and write-buffer budget that every store of a process shares."""

    def __init__(self, options: RocksDBOptions) -> None:
        self.options = options
        self.cache = rocksdict.Cache(options.block_cache_mb * 1024 * 1024)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            options.write_buffer_mb * 1024 * 1024, False, self.cache
        )
        self.decoded = DecodedCache(options.state_cache_mb * 1024 * 1024)

    def rocksdb_options(self) -> rocksdict.Options:
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self.cache)
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        opts.set_block_based_table_factory(table)
        opts.set_write_buffer_manager(self.write_buffers)
        opts.set_write_buffer_size(self.options.write_buffer_per_store_mb * 1024 * 1024)
        opts.set_max_write_buffer_number(2)
        opts.set_max_open_files(self.options.max_open_files)
        compaction, slowdown, stop = _DEFAULT_L0_TRIGGERS
        opts.set_level_zero_file_num_compaction_trigger(compaction)
        opts.set_level_zero_slowdown_writes_trigger(slowdown)
        opts.set_level_zero_stop_writes_trigger(stop)
        opts.set_max_background_jobs(2)
        if self.options.compression:
            opts.set_compression_type(rocksdict.DBCompressionType.lz4())
        return opts


class PartitionStore:
    """The aggregates of one commands partition: id → entry bytes, plus the changelog offset."""

    def __init__(self, path: Path, environment: StoreEnvironment) -> None:
        self.path = path
        self._environment = environment
        self._db = self._open()
        self._staged: dict[bytes, bytes | None] = {}
        #: The decoded values of staged writes, given to :meth:`stage`.
        self._staged_decoded: dict[bytes, Any] = {}
        self._cache = environment.decoded
        self._token = next(_TOKENS)
        self._write = rocksdict.WriteOptions()
        # The changelog is the durable log (see restore); the stub wrongly calls this a method.
        self._write.disable_wal = True  # type: ignore[method-assign,assignment]
        raw = self._db.get(OFFSET_KEY)
        self._offset: int | None = int(raw) if raw is not None else None

    # ---------------------------------------------------------------- reads

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, a staged write included."""
        if key in self._staged:
            return self._staged[key]
        value: bytes | None = self._db.get(key)
        return value

    def get_decoded(self, key: bytes, decode: Callable[[bytes], T]) -> T | None:
        """The value of ``key`` as ``decode`` makes it (None: no value), a staged write
        included; a committed value is decoded once and then served from the cache until
        it changes or ages out. ``decode``'s errors go to the caller and nothing is kept."""
        if key in self._staged:
            decoded = self._staged_decoded.get(key, _NOT_STAGED)
            if decoded is not _NOT_STAGED:
                return cast(T, decoded)
            raw = self._staged[key]
            return decode(raw) if raw is not None else None
        cached = self._cache.get(self._token, key)
        if cached is not None:
            return cast(T, cached)
        raw = self._db.get(key)
        if raw is None:
            return None
        value = decode(raw)
        self._cache.put(self._token, key, value, len(raw))
        return value

    @property
    def changelog_offset(self) -> int | None:
        """The offset of the last changelog record the store holds (None: empty)."""
        return self._offset

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """Every committed (key, value), in key order, without the offset key."""
        for key, value in self._db.items():
            if key not in _INTERNAL:
                yield cast(bytes, key), cast(bytes, value)

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed (key, value) pairs with ``start <= key < stop``, in key order, less the
        keys a staged write deletes or replaces (staged puts are not scanned: they are
        seen once committed) and the store's own keys."""
        for key, value in self._db.items(from_key=start):
            raw = cast(bytes, key)
            if raw >= stop:
                return
            if raw in self._staged or raw in _INTERNAL:
                continue
            yield raw, cast(bytes, value)

    def digest(self) -> str:
        """SHA-256 over every committed (key, value): equal stores, equal digests."""
        hasher = hashlib.sha256()
        for key, value in self.items():
            hasher.update(len(key).to_bytes(4, "big") + key)
            hasher.update(len(value).to_bytes(4, "big") + value)
        return hasher.hexdigest()

    def bind_changelog(self, topic_id: str | None) -> None:
        """Remember which changelog topic (by its id) the store follows.

        A store filled from an earlier topic of the same name (deleted and created again)
        is wiped first: its offset means nothing in the new topic, and restoring on top of
        it would keep entries the new changelog does not have. ``None`` (the id is not
        known) leaves the store as it is.
        """
        if topic_id is None:
            return
        known = self.changelog_id
        if known == topic_id:
            return
        if known is not None:
            self.wipe()
        self._db.put(CHANGELOG_ID_KEY, topic_id.encode(), self._write)

    @property
    def changelog_id(self) -> str | None:
        """The id of the changelog topic the store was filled from (None: not known)."""
        raw = self._db.get(CHANGELOG_ID_KEY)
        return raw.decode() if raw is not None else None

    # ---------------------------------------------------------------- transactional writes

    def stage(self, key: bytes, value: bytes | None, decoded: Any = None) -> None:
        """Keep a write (None deletes) until :meth:`commit` or :meth:`discard`.

        ``decoded``: what :meth:`get_decoded` makes of ``value``; given, it is served to
        reads from now on and cached at commit, which saves decoding the value again."""
        self._staged[key] = value
        if decoded is not None and value is not None:
            self._staged_decoded[key] = decoded
        else:
            self._staged_decoded.pop(key, None)

    @property
    def staged(self) -> int:
        return len(self._staged)

    def staged_items(self) -> list[tuple[bytes, bytes | None]]:
        """The staged (key, value) writes, in the order first staged (None: a delete, a
        tombstone in the changelog)."""
        return list(self._staged.items())

    def commit(self, changelog_offset: int | None) -> None:
        """Write the staged values and the changelog offset in one WriteBatch."""
        if not self._staged and changelog_offset is None:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in self._staged.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            batch.put(OFFSET_KEY, str(changelog_offset).encode())
        self._db.write(batch, self._write)
        cache, token, decoded = self._cache, self._token, self._staged_decoded
        for key, value in self._staged.items():  # write-through: the cache follows RocksDB
            known = decoded.get(key, _NOT_STAGED)
            if known is _NOT_STAGED or value is None:
                cache.drop(token, key)
            else:
                cache.put(token, key, known, len(value))
        self._staged.clear()
        decoded.clear()
        if changelog_offset is not None:
            self._offset = changelog_offset

    def discard(self) -> None:
        """Drop the staged writes (the transaction aborted); the cache holds only what is
        committed, so it has nothing to take back."""
        self._staged.clear()
        self._staged_decoded.clear()

    def restore_batch(
        self, records: Iterable[tuple[bytes, bytes | None]], last_offset: int
    ) -> None:
        """Apply changelog records up to ``last_offset`` (tombstones delete) in one WriteBatch."""
        batch = self.restore_writes()
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.apply_restored(batch, last_offset)

    @staticmethod
    def restore_writes() -> rocksdict.WriteBatch:
        """An empty batch for :meth:`apply_restored`, filled by the caller's own loop (the
        restore's hot loop puts each record straight into it)."""
        return rocksdict.WriteBatch(raw_mode=True)

    def apply_restored(self, batch: rocksdict.WriteBatch, last_offset: int) -> None:
        """Write a batch of changelog records and ``last_offset`` with it, atomically."""
        batch.put(OFFSET_KEY, str(last_offset).encode())
        self._db.write(batch, self._write)
        self._offset = last_offset
        self._token = next(_TOKENS)  # values changed under the cache

    def begin_restore(self) -> None:
        """Compact less while a restore writes (see
        :attr:`RocksDBOptions.restore_l0_compaction_trigger`)."""
        trigger = self._environment.options.restore_l0_compaction_trigger
        self._set_l0_triggers(trigger, 3 * trigger, 4 * trigger)

    def end_restore(self) -> None:
        """Back to RocksDB's compaction triggers; it compacts what the restore left."""
        self._set_l0_triggers(*_DEFAULT_L0_TRIGGERS)

    def _set_l0_triggers(self, compaction: int, slowdown: int, stop: int) -> None:
        try:
            self._db.set_options(
                {
                    "level0_file_num_compaction_trigger": str(compaction),
                    "level0_slowdown_writes_trigger": str(slowdown),
                    "level0_stop_writes_trigger": str(stop),
                }
            )
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise StoreError(f"cannot set the compaction triggers of {self.path}: {exc}") from exc

    # ---------------------------------------------------------------- lifecycle

    def _open(self) -> rocksdict.Rdict:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return rocksdict.Rdict(str(self.path), self._environment.rocksdb_options())
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc

    def wipe(self) -> None:
        """Delete every value, the offset and the changelog id (the store then restores
        from the start)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = self._open()
        self._staged.clear()
        self._staged_decoded.clear()
        self._offset = None
        self._token = next(_TOKENS)

    def flush(self) -> None:
        """Persist memtables (the WAL is off: without this, a clean stop re-restores)."""
        self._db.flush()

    def close(self) -> None:
        self._staged.clear()
        self._staged_decoded.clear()
        self._token = next(_TOKENS)
        self._db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        """Delete a store's files (it rebuilds from the changelog on next open)."""
        shutil.rmtree(path, ignore_errors=True)
