"""The stores of the partitions a worker owns: opened on assignment, restored, closed.

:class:`PartitionStores` keeps one :class:`~streamfold.state.rocksdb.PartitionStore` per
assigned input partition, under ``<state_dir>/<topology>/<input topic>/<partition>``, each
mirrored to the partition of the same number of its changelog topic. Its life cycle:

1. :meth:`PartitionStores.open` opens the store and binds it to its changelog: a store that
   was filled from another incarnation of that topic (recreated since: another topic id) is
   wiped, so it never restores over stale contents;
2. the store is restored from its changelog (:mod:`streamfold.state.restore`); until
   :meth:`step` reports it ready, its input partition stays paused;
3. :meth:`close` (revocation, loss, shutdown) stops its restore, flushes and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from streamfold.state.restore import ChangelogRestorer
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

__all__ = ["PartitionStores"]


class PartitionStores:
    """The open stores of one worker, by (input topic, partition)."""

    def __init__(
        self,
        directory: Path,
        options: RocksDBOptions,
        changelogs: Mapping[str, str],
        restorer: ChangelogRestorer,
        changelog_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        #: input topic -> its changelog topic
        self.changelogs = changelogs
        #: changelog topic -> its topic id (stores remember the one they were filled from)
        self.changelog_ids = changelog_ids or {}
        self.restorer = restorer
        #: Shared by the stores (one block cache), standby stores too.
        self.environment = StoreEnvironment(options)
        self._inputs = {changelog: topic for topic, changelog in changelogs.items()}
        self._stores: dict[tuple[str, int], PartitionStore] = {}
        self._ready: set[tuple[str, int]] = set()

    def __len__(self) -> int:
        return len(self._stores)

    def partitions(self) -> list[tuple[str, int]]:
        return list(self._stores)

    @property
    def restoring(self) -> int:
        return self.restorer.restoring

    @property
    def ready_partitions(self) -> set[tuple[str, int]]:
        return self._ready

    def get(self, topic: str, partition: int) -> PartitionStore | None:
        """The store of a partition whose store is open (restored or not)."""
        return self._stores.get((topic, partition))

    def ready(self, topic: str, partition: int) -> PartitionStore | None:
        """The store of a partition that is restored (None while restoring, or not owned)."""
        key = (topic, partition)
        return self._stores.get(key) if key in self._ready else None

    def open(self, topic: str, partition: int) -> bool:
        """Open (and bind) the store of an assigned partition; True if it is ready now."""
        key = (topic, partition)
        changelog = self.changelogs[topic]
        store = PartitionStore(self.directory / topic / str(partition), self.environment)
        self._stores[key] = store
        store.bind_changelog(self.changelog_ids.get(changelog))
        if self.restorer.add(changelog, partition, store):
            self._ready.add(key)
            return True
        return False

    def step(self, timeout: float) -> list[tuple[str, int]]:
        """Restore a chunk; return the input partitions that became ready."""
        done = []
        for changelog, partition in self.restorer.step(timeout):
            key = (self._inputs[changelog], partition)
            self._ready.add(key)
            done.append(key)
        return done

    def close(self, topic: str, partition: int) -> None:
        """Stop restoring the partition's store, flush it and close it."""
        key = (topic, partition)
        self.restorer.remove(self.changelogs[topic], partition)
        self._ready.discard(key)
        store = self._stores.pop(key, None)
        if store is not None:
            store.flush()
            store.close()

    def close_all(self) -> None:
        for topic, partition in list(self._stores):
            self.close(topic, partition)
        self.restorer.close()
