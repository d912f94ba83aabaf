"""Restoring a store whose changelog topic was deleted and created again."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from streamfold.errors import RetryableError
from streamfold.state.entry import AggregateEntry
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.partitioning import partition_for

from .conftest import FaultyRun, results_by_command
from .faulty import Poke

pytestmark = pytest.mark.integration


def _recreate(admin: KafkaAdmin, topic: str) -> None:
    admin.delete_topics([topic])
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_topics([TopicSpec.compacted(topic, 2)], exist_ok=False)
            return
        except (RetryableError, Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_store_is_rebuilt_when_its_changelog_was_recreated_with_more_records(
    faulty_run: FaultyRun,
) -> None:
    """The store's offset means nothing in a new topic of the same name: restoring from it
    would keep entries the new changelog does not have, and skip some it has."""
    producer = faulty_run.producer
    home = partition_for("stale", 2)
    sent = {producer.send(Poke(widget_id="stale")) for _ in range(3)}
    producer.flush()
    deadline = time.monotonic() + 120
    while (
        not sent
        <= results_by_command(
            faulty_run.settings, faulty_run.codec, faulty_run.topics.results
        ).keys()
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert faulty_run.worker.stop() == 0
    changelog = faulty_run.topics.changelog
    _recreate(KafkaAdmin(faulty_run.settings), changelog)
    fresh = {f"fresh-{n}".encode(): AggregateEntry(version=n + 1).encode() for n in range(12)}
    raw = Producer({"bootstrap.servers": faulty_run.settings.bootstrap_servers})
    for key, value in fresh.items():
        raw.produce(changelog, value, key, partition=home)
    assert raw.flush(30) == 0
    faulty_run.worker.start(timeout=120)  # ready: every store restored
    assert faulty_run.worker.stop() == 0
    path = faulty_run.worker.state_dir / "faulty" / faulty_run.topics.commands / str(home)
    store = PartitionStore(path, StoreEnvironment(RocksDBOptions(block_cache_mb=8)))
    try:
        assert dict(store.items()) == fresh
        assert store.changelog_offset == len(fresh) - 1
    finally:
        store.close()
