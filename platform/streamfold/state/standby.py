"""Warm standby stores: copies of the stores of partitions a worker does not own.

With ``standby_stores`` on, a worker follows the changelog of every partition of its
topology that it does not own into a store of its own, at the path it would restore that
partition to (Kafka Streams' standby replicas; in a group of two workers, one replica of
each store). When the group gives it one of those partitions, the store is already there:
:class:`~streamfold.state.restore.ChangelogRestorer` restores only the records it has not
followed yet, so a survivor takes over a dead worker's partitions without a full restore.

The follower reads with ``read_committed``, so a store never holds a record of an aborted
transaction, and writes each chunk and the offset of its last record in one WriteBatch (as
a restore does). Its life cycle, driven by the worker:

1. :meth:`StandbyStores.follow` a partition the worker does not own (at start-up, and
   after a revocation);
2. :meth:`StandbyStores.step` applies a chunk of records from the worker's loop, when the
   loop has nothing else to do;
3. :meth:`StandbyStores.release` a partition just assigned: its store is flushed and
   closed, and the worker opens it as its own.

The cost: every worker holds (and writes) the state of the whole topology, so memory, disk
and changelog reads grow with the number of workers. Meant for small groups.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streamfold.observability.logging import get_logger
from streamfold.state.restore import ChangelogChunk
from streamfold.state.rocksdb import PartitionStore, StoreEnvironment
from streamfold.transport.admin import translate_kafka_error
from streamfold.transport.settings import KafkaSettings

__all__ = ["StandbyStores"]

log = get_logger(__name__)


class StandbyStores:
    """Follows changelog partitions into standby stores (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        directory: Path,
        environment: StoreEnvironment,
        inputs: Mapping[str, str],
        changelog_ids: Mapping[str, str] | None = None,
        batch: int = 10_000,
    ) -> None:
        self.directory = directory
        self.batch = batch
        #: changelog topic -> the input topic whose stores it mirrors (the store's path)
        self._inputs = inputs
        self._changelog_ids = changelog_ids or {}
        self._environment = environment
        self._stores: dict[tuple[str, int], PartitionStore] = {}
        self._consumer = Consumer(
            settings.consumer_config(
                f"streamfold-standby-{uuid.uuid4().hex}",
                **{"fetch.wait.max.ms": 100, "queued.max.messages.kbytes": 4 * 1024},
            )
        )

    @property
    def followed(self) -> list[tuple[str, int]]:
        """The (changelog, partition) pairs followed now."""
        return list(self._stores)

    def follow(self, changelog: str, partition: int) -> None:
        """Keep a standby store of ``changelog``'s ``partition`` (idempotent)."""
        key = (changelog, partition)
        if key in self._stores:
            return
        path = self.directory / self._inputs[changelog] / str(partition)
        store = PartitionStore(path, self._environment)
        store.bind_changelog(self._changelog_ids.get(changelog))  # wiped if from another topic
        held = store.changelog_offset
        self._stores[key] = store
        start = held + 1 if held is not None else OFFSET_BEGINNING
        self._consumer.incremental_assign([TopicPartition(changelog, partition, start)])
        log.debug("following a standby store", topic=changelog, partition=partition)

    def release(self, changelog: str, partition: int) -> None:
        """Stop following a partition, flush and close its store (it is being assigned)."""
        store = self._stores.pop((changelog, partition), None)
        if store is None:
            return
        self._consumer.incremental_unassign([TopicPartition(changelog, partition)])
        store.flush()
        store.close()

    def step(self, timeout: float = 0.0) -> int:
        """Apply one chunk of the followed changelogs; return the records applied."""
        if not self._stores:
            return 0
        try:
            messages = self._consumer.consume(self.batch, timeout)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "following standby changelogs") from exc
        chunks: dict[tuple[str, int], ChangelogChunk] = {}
        applied = 0
        for message in messages:
            key = message.key()
            if key is None or message.error() is not None:
                self._check(message)
                continue
            where = (message.topic() or "", message.partition() or 0)
            chunk = chunks.get(where)
            if chunk is None:
                chunk = chunks[where] = ChangelogChunk(PartitionStore.restore_writes())
            value = message.value()
            if value is None:
                chunk.batch.delete(key)
            else:
                chunk.batch.put(key, value)
            chunk.last = message.offset() or 0
            applied += 1
        for where, chunk in chunks.items():
            store = self._stores.get(where)
            if store is not None:  # not released while its records were in flight
                store.apply_restored(chunk.batch, chunk.last)
        return applied

    @staticmethod
    def _check(message: Message) -> None:
        """A consumer error: fatal ones stop the worker; others (a broker away) are logged,
        and the follower goes on when the broker is back."""
        error = message.error()
        if error is None:
            return
        if error.fatal():
            raise translate_kafka_error(KafkaException(error), "following standby changelogs")
        log.warning("standby follower", error=str(error))

    def close(self) -> None:
        for changelog, partition in list(self._stores):
            self.release(changelog, partition)
        self._consumer.close()
