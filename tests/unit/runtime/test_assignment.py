"""Waiting for a partition's previous owner on assignment (the committed-offsets read)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.worker import AggregateWorker

pytestmark = pytest.mark.unit

PARTITIONS = [TopicPartition("retail.store_stock.commands", 0)]


class _Clock:
    now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Committed:
    """A consumer whose committed-offsets read times out ``timeouts`` times (each after its
    full timeout, on a fake clock), then answers."""

    def __init__(self, timeouts: int, code: int = KafkaError._TIMED_OUT) -> None:
        self.timeouts = timeouts
        self.code = code
        self.calls: list[float] = []
        self.clock = _Clock()

    def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
        self.calls.append(timeout)
        if len(self.calls) <= self.timeouts:
            self.clock.now += timeout
            raise KafkaException(KafkaError(self.code, "Failed to get committed offsets"))
        return partitions


@pytest.fixture(autouse=True)
def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamfold.runtime.worker.time", _CLOCK)


_CLOCK = _Clock()


class _Successor:
    """Fakes runtime.failover.Successor: fences ``departed`` at its first chance."""

    def __init__(self, departed: list[str] | None = None) -> None:
        self.departed = departed or []
        self.asked = 0

    def take_over(self, partitions: list[TopicPartition]) -> list[str]:
        self.asked += 1
        found, self.departed = self.departed, []
        return found


def _wait(
    consumer: _Committed,
    transaction_timeout_ms: int = 30_000,
    successor: Any = None,
    stop_after: int | None = None,
) -> bool:
    """The wait; with ``stop_after``, a stop is asked once that many reads timed out."""
    consumer.clock = _CLOCK
    worker = SimpleNamespace(
        settings=WorkerSettings(transaction_timeout_ms=transaction_timeout_ms),
        _successor=successor or _Successor(),
        _init_transactions=lambda: None,
        _stop_asked=False,
    )
    if stop_after is not None:
        read = consumer.committed

        def committed(partitions: list[TopicPartition], timeout: float) -> Any:
            if len(consumer.calls) == stop_after:
                worker._stop_asked = True  # as the SIGTERM handler does, between two reads
            return read(partitions, timeout)

        consumer.committed = committed  # type: ignore[method-assign]
    return AggregateWorker._await_previous_owner(worker, consumer, PARTITIONS)  # type: ignore[arg-type]


def test_a_departed_owner_is_fenced_before_the_offsets_are_read() -> None:
    consumer = _Committed(timeouts=0)
    successor = _Successor(["retail.w2"])
    _wait(consumer, successor=successor)
    assert (successor.asked, len(consumer.calls)) == (1, 1)


def test_offsets_that_do_not_come_within_a_second_ask_for_a_fence_again() -> None:
    consumer = _Committed(timeouts=1)
    successor = _Successor()
    _wait(consumer, successor=successor)
    assert consumer.calls[0] == 1.0  # the first read waits a second, not 30
    assert successor.asked == 2  # before the first read, and after it timed out
    assert len(consumer.calls) == 2


def test_a_read_that_times_out_while_the_previous_owner_hangs_is_asked_again() -> None:
    consumer = _Committed(timeouts=2)
    _wait(consumer)
    assert len(consumer.calls) == 3


def test_other_errors_are_raised_at_once() -> None:
    consumer = _Committed(timeouts=1, code=KafkaError._TRANSPORT)
    with pytest.raises(KafkaException):
        _wait(consumer)
    assert len(consumer.calls) == 1


def test_a_stop_asked_while_waiting_ends_the_wait_within_a_read() -> None:
    """A SIGTERM never waits for another worker's transaction (Kubernetes kills 30 s after)."""
    consumer = _Committed(timeouts=1000)
    started = _CLOCK.now
    assert _wait(consumer, stop_after=3) is False
    assert len(consumer.calls) == 4  # the read under way when the stop came, then none
    assert max(consumer.calls) <= 1.0
    assert _CLOCK.now - started <= 4.0


def test_the_wait_ends_once_the_broker_must_have_aborted_the_transaction() -> None:
    consumer = _Committed(timeouts=1000)
    started = _CLOCK.now
    with pytest.raises(KafkaException):
        _wait(consumer, transaction_timeout_ms=30_000)  # bound: 30 s + the abort check
    assert 1 < len(consumer.calls) < 1000
    assert 45 <= _CLOCK.now - started <= 47


class _Recorder:
    """Fakes of the consumer, checkpoint and stores that log the order of calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.open = True
        self.fenced = None

    # consumer
    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("assign")

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("pause")

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("resume")

    def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
        self.calls.append("wait for the previous owner")
        return partitions

    def memberid(self) -> str:
        return "member-1"

    # checkpoint
    def commit(self) -> bool:
        self.calls.append("commit the open batch")
        self.open = False
        return True

    # stores
    def open_store(self, topic: str, partition: int) -> bool:
        self.calls.append("open store")
        return True


def _worker(fake: _Recorder) -> SimpleNamespace:
    stores = SimpleNamespace(open=fake.open_store, changelogs={})
    worker = SimpleNamespace(
        settings=WorkerSettings(),
        _consumer=fake,
        _checkpoint=fake,
        feeds={},
        _stores=stores,
        _joined=False,
        _arrived=[],
        _assigned=False,
        _await_previous_owner=lambda c, p: AggregateWorker._await_previous_owner(
            worker,  # type: ignore[arg-type]
            c,
            p,
        ),
        _report_partitions=lambda: None,
        _successor=_Successor(),
        _init_transactions=lambda: fake.calls.append("initialise transactions"),
        _standbys=None,
        _stop_asked=False,
    )
    return worker


def test_the_assignment_callback_makes_no_transactional_call() -> None:
    """A transactional call inside the callback can wait on the rebalance the callback holds
    up: it only takes the partitions, paused, for the next step."""
    fake = _Recorder()
    worker = _worker(fake)
    AggregateWorker._on_assign(worker, fake, PARTITIONS)  # type: ignore[arg-type]
    assert fake.calls == ["assign", "pause"]
    assert worker._arrived == PARTITIONS
    assert worker._assigned and worker._joined


def test_a_take_over_commits_the_open_batch_before_waiting_for_the_previous_owner() -> None:
    """Cooperative-sticky assigns without revoking; the wait may outlast our transaction."""
    fake = _Recorder()
    worker = _worker(fake)
    AggregateWorker._on_assign(worker, fake, PARTITIONS)  # type: ignore[arg-type]
    AggregateWorker._take_over(worker)  # type: ignore[arg-type]
    assert fake.calls == [
        "assign",
        "pause",
        "commit the open batch",
        "initialise transactions",
        "wait for the previous owner",
        "open store",
        "resume",
    ]
    assert worker._arrived == []
    assert not worker._assigned


def test_the_worker_is_not_ready_while_it_waits_for_the_previous_owner() -> None:
    """/readyz answers from another thread: a 200 before the stores are open (nothing is
    restoring yet) let a caller stop the worker before it had restored anything."""
    fake = _Recorder()
    worker = _worker(fake)
    worker._started = True
    worker._stores.restoring = 0
    readiness: list[bool] = []

    def committed(partitions: list[TopicPartition], timeout: float) -> Any:
        readiness.append(AggregateWorker.ready.fget(worker))  # type: ignore[attr-defined]
        return partitions

    fake.committed = committed  # type: ignore[method-assign]
    AggregateWorker._on_assign(worker, fake, PARTITIONS)  # type: ignore[arg-type]
    AggregateWorker._take_over(worker)  # type: ignore[arg-type]
    assert readiness == [False]
    assert AggregateWorker.ready.fget(worker)  # type: ignore[attr-defined]


def test_a_take_over_given_up_on_a_stop_opens_no_store() -> None:
    """The partitions stay paused and arrived: the close's revocation forgets them."""
    fake = _Recorder()
    worker = _worker(fake)
    worker._stop_asked = True
    AggregateWorker._on_assign(worker, fake, PARTITIONS)  # type: ignore[arg-type]
    AggregateWorker._take_over(worker)  # type: ignore[arg-type]
    assert fake.calls == ["assign", "pause", "commit the open batch", "initialise transactions"]
    assert worker._arrived == PARTITIONS
    assert worker._assigned


def test_an_assignment_of_nothing_still_initialises_transactions() -> None:
    """It fences a zombie of this instance id as soon as this member is in the group."""
    fake = _Recorder()
    worker = _worker(fake)
    AggregateWorker._on_assign(worker, fake, [])  # type: ignore[arg-type]
    AggregateWorker._take_over(worker)  # type: ignore[arg-type]
    assert fake.calls == ["assign", "pause", "initialise transactions"]
    assert not worker._assigned


def test_partitions_revoked_before_their_take_over_are_not_taken_over() -> None:
    fake = _Recorder()
    worker = _worker(fake)
    kept = TopicPartition("retail.store_stock.commands", 1)
    AggregateWorker._on_assign(worker, fake, [*PARTITIONS, kept])  # type: ignore[arg-type]
    AggregateWorker._forget_arrived(worker, PARTITIONS)  # type: ignore[arg-type]
    assert worker._arrived == [kept]
