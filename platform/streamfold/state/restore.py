"""Restoring partition stores from their changelogs, a chunk at a time, beside processing.

A store is restored when its partition is assigned: from the offset after the last changelog
record it holds (:attr:`~streamfold.state.rocksdb.PartitionStore.changelog_offset`) to the
changelog's end, read with ``read_committed``. The worker calls :meth:`ChangelogRestorer.step`
from its loop, so partitions whose stores are ready keep processing while others restore;
their commands partitions stay paused until :meth:`step` reports them done.

The end is taken after the worker has read the partition's committed offset (which, under
``read_committed``, waits for any transaction of the partition's previous owner to finish),
so no record of an earlier owner lands in the changelog after the restore has ended.
A store that claims more than the changelog holds is wiped and restored from the beginning;
so is, before its restore starts, a store filled from an earlier topic of the same name (it
remembers the changelog's topic id: :meth:`~streamfold.state.rocksdb.PartitionStore.
bind_changelog`), which may hold fewer records than the new one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import rocksdict
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamfold.observability.logging import get_logger
from streamfold.state.rocksdb import PartitionStore
from streamfold.transport.admin import translate_kafka_error
from streamfold.transport.reading import watermarks
from streamfold.transport.settings import KafkaSettings

__all__ = ["ChangelogChunk", "ChangelogRestorer", "RestoreProgress"]

log = get_logger(__name__)


class RestoreProgress(Protocol):
    """Where restore progress goes (metrics)."""

    def restore_progress(
        self, topic: str, partition: int, restored: int, remaining: int
    ) -> None: ...


@dataclass(slots=True)
class ChangelogChunk:
    """One partition's records of a step, in the WriteBatch they are written with."""

    batch: rocksdict.WriteBatch
    last: int = -1


@dataclass(slots=True)
class _Restoring:
    store: PartitionStore
    end: int
    restored: int = 0
    started: float = field(default_factory=time.monotonic)


class ChangelogRestorer:
    """Restores stores from changelog partitions with one consumer of its own."""

    def __init__(
        self,
        settings: KafkaSettings,
        progress: RestoreProgress,
        batch: int = 10_000,
        prefetch_mb: int = 8,
    ) -> None:
        self.batch = batch
        self.progress = progress
        self._consumer = Consumer(
            settings.consumer_config(
                f"streamfold-restore-{uuid.uuid4().hex}",
                **{
                    "enable.partition.eof": True,
                    # librdkafka stops fetching a partition once its queue is full
                    # (queued.min.messages, 100k by default, or queued.max.messages.kbytes)
                    # and waits fetch.queue.backoff.ms (1 s by default) before it fetches
                    # again: a restore spent about half its time waiting so. With a short
                    # backoff the prefetch can be small: the RSS peak of a restore follows
                    # the prefetch and the fetch sizes (each fetch response stays allocated
                    # while any of its records is queued), the rate hardly does. Measured
                    # with 1M entries (benchmarks/rss_probe.py): 16 MiB fetches, 4 MiB per
                    # partition and a 32 MiB prefetch peaked at 335 MB; 4 MiB, 1 MiB and
                    # 8 MiB at 180 MB, at the same rate; 1 MiB, 256 KiB and 8 MiB at 169
                    # and 177 MB against 194 and 185 MB (two rounds each, 2026-12-04).
                    "fetch.max.bytes": 1024 * 1024,
                    "max.partition.fetch.bytes": 256 * 1024,
                    "queued.max.messages.kbytes": prefetch_mb * 1024,
                    "queued.min.messages": 10_000_000,
                    "fetch.queue.backoff.ms": 10,
                    # A broker answers a connection's requests in order: the end offsets
                    # asked for the next store to restore wait behind a fetch that waits for
                    # records (500 ms by default), which made each store of an assignment
                    # take half a second to open.
                    "fetch.wait.max.ms": 10,
                },
            )
        )
        self._active: dict[tuple[str, int], _Restoring] = {}

    @property
    def restoring(self) -> int:
        return len(self._active)

    def add(self, topic: str, partition: int, store: PartitionStore) -> bool:
        """Start restoring ``store``; return True if it is already up to date."""
        low, end = self._watermarks(topic, partition)
        held = store.changelog_offset
        if held is not None and held >= end:
            log.warning(
                "store is ahead of its changelog; rebuilding it",
                topic=topic,
                partition=partition,
                store_offset=held,
                changelog_end=end,
            )
            store.wipe()
            held = None
        start = held + 1 if held is not None else OFFSET_BEGINNING
        if end == 0 or (held is not None and held + 1 >= end) or end <= low:
            self.progress.restore_progress(topic, partition, 0, 0)
            return True
        first = start if start != OFFSET_BEGINNING else low
        store.begin_restore()
        self._active[(topic, partition)] = _Restoring(store, end)
        self._consumer.incremental_assign([TopicPartition(topic, partition, start)])
        self.progress.restore_progress(topic, partition, 0, end - first)
        log.info("restoring store", topic=topic, partition=partition, start=first, end=end)
        return False

    def remove(self, topic: str, partition: int) -> None:
        """Stop restoring a partition (it was revoked)."""
        state = self._active.pop((topic, partition), None)
        if state is not None:
            state.store.end_restore()
            self._consumer.incremental_unassign([TopicPartition(topic, partition)])

    def step(self, timeout: float = 0.05) -> list[tuple[str, int]]:
        """Apply one chunk of changelog records; return the partitions now fully restored."""
        if not self._active:
            return []
        try:
            messages = self._consumer.consume(self.batch, timeout)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "reading changelogs") from exc
        # The hot loop of a restore: records arrive in runs per partition, so the batch to
        # write into changes only when the partition does; each record goes straight into
        # its partition's WriteBatch (no intermediate list, no second pass).
        batches: dict[tuple[str, int], ChangelogChunk] = {}
        finished: set[tuple[str, int]] = set()
        run_topic: str | None = None
        run_partition = -1
        run: ChangelogChunk | None = None
        put: Callable[..., None]  # the run's batch methods, set by its first record
        delete: Callable[..., None]
        tail: Message | None = None
        for message in messages:
            key = message.key()
            if key is None:
                self._control(message, finished)
                continue
            partition = message.partition()
            topic = message.topic()
            if partition != run_partition or topic != run_topic:
                if run is not None and tail is not None:
                    run.last = tail.offset() or 0
                run_topic, run_partition = topic, partition or 0
                where = (run_topic or "", run_partition)
                run = batches.get(where)
                if run is None:
                    run = batches[where] = ChangelogChunk(PartitionStore.restore_writes())
                put, delete = run.batch.put, run.batch.delete
            value = message.value()
            if value is None:
                delete(key)
            else:
                put(key, value)
            tail = message
        if run is not None and tail is not None:
            run.last = tail.offset() or 0
        for where, chunk in batches.items():
            state = self._active.get(where)
            if state is None:
                continue  # revoked while its records were in flight
            records = chunk.batch.len()
            state.store.apply_restored(chunk.batch, chunk.last)
            state.restored += records
            if chunk.last + 1 >= state.end:
                finished.add(where)
            remaining = max(0, state.end - chunk.last - 1)
            self.progress.restore_progress(where[0], where[1], records, remaining)
        done = []
        for where in finished:
            ended = self._active.pop(where, None)
            if ended is None:
                continue
            state = ended
            state.store.end_restore()
            self._consumer.incremental_unassign([TopicPartition(*where)])
            elapsed = time.monotonic() - state.started
            log.info(
                "store restored",
                topic=where[0],
                partition=where[1],
                records=state.restored,
                seconds=round(elapsed, 3),
                per_second=round(state.restored / elapsed) if elapsed > 0 else None,
            )
            self.progress.restore_progress(where[0], where[1], 0, 0)
            done.append(where)
        return done

    def _control(self, message: Message, finished: set[tuple[str, int]]) -> None:
        """An end-of-partition event (or an error, or a keyless record: skipped)."""
        error = message.error()
        if error is None:
            return
        if error.code() != KafkaError._PARTITION_EOF:
            raise translate_kafka_error(KafkaException(error), "reading changelogs")
        where = (message.topic() or "", message.partition() or 0)
        state = self._active.get(where)
        if state is not None and (message.offset() or 0) >= state.end:
            finished.add(where)

    def close(self) -> None:
        self._active.clear()
        self._consumer.close()

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        return watermarks(self._consumer, topic, partition)
