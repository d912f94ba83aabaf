"""Local aggregate state: RocksDB stores per partition, mirrored to compacted changelogs.

- :mod:`~streamfold.state.entry`: what one aggregate's store entry holds (version, deleted,
  state bytes, the recent command results that make commands idempotent);
- :mod:`~streamfold.state.rocksdb`: a partition's RocksDB store, whose writes become visible
  only when the transaction that produced their changelog records has committed;
- :mod:`~streamfold.state.restore`: stores rebuilt from their changelogs, beside processing;
- :mod:`~streamfold.state.stores`: the stores of a worker's partitions: open, bind to their
  changelog, restore, close.
"""

from __future__ import annotations

from streamfold.state.entry import AggregateEntry, StoredResult
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

__all__ = ["AggregateEntry", "PartitionStore", "RocksDBOptions", "StoreEnvironment", "StoredResult"]
