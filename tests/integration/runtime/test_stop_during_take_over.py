"""A worker told to stop while it waits to take partitions over stops at once.

Taking partitions over waits for their previous owner's open transaction (its committed
offsets are read stable): up to the transaction timeout and the broker's abort check when
that owner cannot be fenced. A SIGTERM must not wait that out: Kubernetes kills a pod 30 s
after it, and the broker-loss test stops its workers right after one of them left.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from .conftest import FaultyRun

pytestmark = pytest.mark.integration


def test_a_worker_waiting_for_a_previous_owner_stops_on_sigterm(faulty_run: FaultyRun) -> None:
    worker = faulty_run.worker
    assert worker.stop() == 0
    group = f"{faulty_run.prefix}streamfold.faulty"
    commands = faulty_run.topics.commands
    # A transaction no member of the group owns holds offsets of both command partitions:
    # no one can fence it, so a successor's stable read of the offsets waits for it.
    stranger = Producer(
        {
            "bootstrap.servers": faulty_run.settings.bootstrap_servers,
            "transactional.id": f"{faulty_run.prefix}stranger",
            "transaction.timeout.ms": 120_000,
        }
    )
    member = Consumer(
        {"bootstrap.servers": faulty_run.settings.bootstrap_servers, "group.id": group}
    )
    try:
        stranger.init_transactions(30)
        stranger.begin_transaction()
        offsets = [TopicPartition(commands, p, 0) for p in range(2)]
        stranger.send_offsets_to_transaction(offsets, member.consumer_group_metadata(), 30)
        member.close()
        log = worker.log_file
        seen = log.read_text(encoding="utf-8").count("transaction is still open")
        worker.spawn()
        deadline = time.monotonic() + 60
        while log.read_text(encoding="utf-8").count("transaction is still open") == seen:
            assert time.monotonic() < deadline, "the worker never waited for the transaction"
            assert worker.running(), log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)  # inside the wait
        asked = time.monotonic()
        code = worker.stop(timeout=10)
        took = time.monotonic() - asked
        assert code == 0, f"the worker did not stop within 10 s of SIGTERM (code {code})"
        assert took < 10, took
    finally:
        stranger.abort_transaction(30)
