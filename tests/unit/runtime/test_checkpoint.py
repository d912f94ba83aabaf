"""The checkpoint with a fault injected at every step of its transaction.

The producer and consumer are fakes that record what the checkpoint asks of them and fail
where a test says; the stores are real RocksDB stores.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamfold.contracts import headers as h
from streamfold.contracts.headers import DeadLetterReason
from streamfold.runtime.checkpoint import (
    BatchAbortedError,
    Checkpoint,
    FencedError,
    ProducerHungError,
)
from streamfold.runtime.processor import UnproducibleRecordError
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

pytestmark = pytest.mark.unit

TOPIC = "ctx.agg.commands"
CHANGELOG = "ctx.agg.changelog"


def _error(code: int, *, fatal: bool = False, retriable: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, f"injected {code}", fatal=fatal, retriable=retriable))


class _Delivered:
    """What a delivery report hands the callback."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> None:
        return None

    def __len__(self) -> int:
        return 10


class FakeProducer:
    """Records calls; ``fail[step]`` is a list of exceptions raised by the next calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.produced: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self.committed: list[list[tuple[str, bytes | None]]] = []
        self.pending: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.delivery_error: KafkaError | None = None  # every delivery report fails so
        self.open = False
        self._offsets: dict[tuple[str, int], int] = {}

    def _maybe_fail(self, step: str) -> None:
        self.calls.append(step)
        failures = self.fail.get(step)
        if failures:
            raise failures.pop(0)

    def begin_transaction(self) -> None:
        self._maybe_fail("begin")
        self.open = True

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self._maybe_fail("produce")
        record = (topic, value, kwargs)
        self.produced.append(record)
        self.pending.append(record)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self._maybe_fail("flush")
        for topic, _value, kwargs in self.pending:
            partition = kwargs.get("partition", 0)
            offset = self._offsets.get((topic, partition), -1) + 1
            self._offsets[(topic, partition)] = offset
            callback = kwargs.get("on_delivery")
            if callback is not None:  # like librdkafka's, a delivery report has no headers
                callback(self.delivery_error, _Delivered(topic, partition, offset))
        self.pending.clear()
        return 0

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self._maybe_fail("send_offsets")

    def commit_transaction(self, timeout: float = 0) -> None:
        self._maybe_fail("commit")
        self.committed.append([(t, v) for t, v, _k in self.produced])
        self.produced.clear()
        self.open = False

    def abort_transaction(self, timeout: float = 0) -> None:
        self._maybe_fail("abort")
        self.produced.clear()
        self.pending.clear()
        self.open = False


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def consumer_group_metadata(self) -> object:
        return object()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, *args: Any, **kwargs: Any) -> None:
        pass


class Metrics:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.aborts = 0

    def batch(self, size: int, commit_seconds: float) -> None:
        self.batches.append(size)

    def aborted(self) -> None:
        self.aborts += 1


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    return PartitionStore(tmp_path / "p0", StoreEnvironment(RocksDBOptions(block_cache_mb=8)))


Parts = tuple[Checkpoint, FakeProducer, FakeConsumer, Metrics]


def make_parts(producer: FakeProducer, **options: Any) -> Parts:
    consumer, metrics = FakeConsumer(), Metrics()
    checkpoint = Checkpoint(
        producer,  # type: ignore[arg-type]
        consumer,  # type: ignore[arg-type]
        {TOPIC: CHANGELOG},
        metrics,
        transaction_gap_ms=0,
        **options,
    )
    return checkpoint, producer, consumer, metrics


@pytest.fixture
def parts() -> Parts:
    return make_parts(FakeProducer())


def process(checkpoint: Checkpoint, store: PartitionStore, offset: int, name: str) -> None:
    """What a processor does for one input: records out, one entry staged."""
    checkpoint.track(TOPIC, 0, offset, store)
    headers = [(h.COMMAND_ID, name.encode())]
    checkpoint.send("ctx.agg.events", name.encode(), f"event {name}".encode(), headers)
    checkpoint.send("ctx.agg.results", name.encode(), f"result {name}".encode(), headers, 0)
    store.stage(name.encode(), f"entry {name}".encode())
    checkpoint.done(TOPIC, 0, offset)


def values(records: list[tuple[str, bytes | None]]) -> list[bytes | None]:
    return [value for _topic, value in records]


def test_a_commit_sends_changelogs_then_offsets_then_commits_then_writes_the_store(
    parts: Parts, store: PartitionStore
) -> None:
    checkpoint, producer, _consumer, metrics = parts
    process(checkpoint, store, 10, "a")
    process(checkpoint, store, 11, "b")
    assert checkpoint.commit()
    assert producer.calls == ["begin", *["produce"] * 6, "flush", "send_offsets", "commit"]
    (records,) = producer.committed
    assert values(records)[-2:] == [b"entry a", b"entry b"]  # the changelog, last
    assert dict(store.items()) == {b"a": b"entry a", b"b": b"entry b"}
    assert store.changelog_offset == 1
    assert metrics.batches == [2]
    assert not checkpoint.open


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("flush", _error(KafkaError._TRANSPORT)),
        ("send_offsets", _error(KafkaError.ILLEGAL_GENERATION)),
        ("commit", _error(KafkaError._STATE)),
    ],
)
def test_a_failed_step_aborts_rewinds_and_drops_the_staged_entries(
    parts: Parts, store: PartitionStore, step: str, error: KafkaException
) -> None:
    checkpoint, producer, consumer, metrics = parts
    process(checkpoint, store, 10, "a")
    process(checkpoint, store, 11, "b")
    producer.fail[step] = [error]
    assert not checkpoint.commit()
    assert producer.calls[-1] == "abort"
    assert producer.committed == []
    assert consumer.seeks == [(TOPIC, 0, 10)]  # the batch is read again from its start
    assert checkpoint.rewound == {(TOPIC, 0)}
    assert list(store.items()) == [] and store.staged == 0
    assert metrics.aborts == 1
    process(checkpoint, store, 10, "a")  # the next batch commits cleanly
    assert checkpoint.commit()
    assert len(producer.committed) == 1


def test_a_commit_that_times_out_is_asked_again_not_aborted(
    parts: Parts, store: PartitionStore
) -> None:
    checkpoint, producer, _consumer, metrics = parts
    process(checkpoint, store, 10, "a")
    producer.fail["commit"] = [_error(KafkaError._TIMED_OUT, retriable=True)] * 2
    assert checkpoint.commit()
    assert producer.calls.count("commit") == 3
    assert "abort" not in producer.calls
    assert len(producer.committed) == 1 and metrics.aborts == 0
    assert dict(store.items()) == {b"a": b"entry a"}


def test_retriable_offsets_are_sent_again(parts: Parts, store: PartitionStore) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    producer.fail["send_offsets"] = [_error(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True)]
    assert checkpoint.commit()
    assert producer.calls.count("send_offsets") == 2


@pytest.mark.parametrize(
    "error",
    [
        _error(KafkaError._FENCED, fatal=True),
        _error(KafkaError.PRODUCER_FENCED),
        _error(KafkaError.INVALID_PRODUCER_EPOCH),
    ],
)
def test_a_fenced_commit_stops_for_good_and_writes_nothing(
    parts: Parts, store: PartitionStore, error: KafkaException
) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    producer.fail["commit"] = [error]
    with pytest.raises(FencedError):
        checkpoint.commit()
    assert checkpoint.fenced is not None
    assert "abort" not in producer.calls  # a fenced producer must not touch the broker
    assert list(store.items()) == []
    assert not checkpoint.open


def test_a_record_the_producer_refuses_is_its_inputs_fault(
    parts: Parts, store: PartitionStore
) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    checkpoint.track(TOPIC, 0, 11, store)
    producer.fail["produce"] = [_error(KafkaError.MSG_SIZE_TOO_LARGE)]
    with pytest.raises(UnproducibleRecordError) as raised:
        checkpoint.send("ctx.agg.state", b"b", b"x" * 100, [(h.COMMAND_ID, b"b")])
    assert (raised.value.input_id, raised.value.reason) == ("b", DeadLetterReason.RECORD_TOO_LARGE)


def test_a_produce_error_of_the_transaction_aborts_and_rewinds(
    parts: Parts, store: PartitionStore
) -> None:
    checkpoint, producer, consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    checkpoint.track(TOPIC, 0, 11, store)
    producer.fail["produce"] = [_error(KafkaError._STATE)]
    with pytest.raises(BatchAbortedError):
        checkpoint.send("ctx.agg.state", b"b", b"b", [(h.COMMAND_ID, b"b")])
    assert producer.calls[-1] == "abort"
    assert consumer.seeks == [(TOPIC, 0, 10)]
    assert store.staged == 0


def test_a_fatal_produce_error_is_fencing(parts: Parts, store: PartitionStore) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    producer.fail["produce"] = [_error(KafkaError._FENCED, fatal=True)]
    with pytest.raises(FencedError):
        checkpoint.send("ctx.agg.state", b"b", b"b", [(h.COMMAND_ID, b"b")])


def test_held_records_survive_a_failed_begin_and_a_failed_send(
    parts: Parts, store: PartitionStore
) -> None:
    """Records held until the transaction begins are all sent, whatever fails meanwhile."""
    checkpoint, producer, _consumer, _metrics = parts
    checkpoint._quiet_until = float("inf")  # the gap: everything is held
    process(checkpoint, store, 10, "a")
    process(checkpoint, store, 11, "b")
    assert producer.calls == []
    checkpoint._quiet_until = 0.0
    producer.fail["begin"] = [_error(KafkaError._TRANSPORT)]
    process(checkpoint, store, 12, "c")  # begin fails: all of a, b and c stay held
    assert producer.calls == ["begin"]
    checkpoint._quiet_until = 0.0
    producer.fail["produce"] = [BufferError(), _error(KafkaError._TRANSPORT)]
    process(checkpoint, store, 13, "d")  # begins; the 2nd produce fails: the rest stay held
    assert checkpoint.commit()
    (records,) = producer.committed
    sent = [v for v in values(records) if not (v or b"").startswith(b"entry")]
    assert sent == [f"{kind} {n}".encode() for n in "abcd" for kind in ("event", "result")]


def test_a_refusal_known_only_at_commit_finds_its_input_on_the_next_batch(
    parts: Parts, store: PartitionStore
) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    producer.fail["commit"] = [_error(KafkaError.MSG_SIZE_TOO_LARGE)]
    assert not checkpoint.commit()  # no record named: ask for every delivery report
    process(checkpoint, store, 10, "a")
    producer.delivery_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    producer.fail["commit"] = [_error(KafkaError.MSG_SIZE_TOO_LARGE)]
    assert not checkpoint.commit()
    quarantined = checkpoint.quarantined("a")
    assert quarantined is not None and quarantined.reason is DeadLetterReason.RECORD_TOO_LARGE
    assert checkpoint.quarantined("a") is None  # used up


def test_a_crash_between_the_commit_and_the_write_batch_restores_from_the_changelog(
    parts: Parts, store: PartitionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    assert checkpoint.commit()
    process(checkpoint, store, 11, "b")

    def crash(*_args: Any) -> None:
        raise SystemExit("killed after the commit")

    monkeypatch.setattr(store, "commit", crash)
    with pytest.raises(SystemExit):
        checkpoint.commit()
    assert len(producer.committed) == 2  # Kafka has the second transaction
    monkeypatch.undo()
    store.close()
    reopened = PartitionStore(store.path, StoreEnvironment(RocksDBOptions(block_cache_mb=8)))
    assert dict(reopened.items()) == {b"a": b"entry a"}  # the WriteBatch never ran
    assert reopened.changelog_offset == 0
    # The restore reads the changelog from the stored offset on: entry b comes back.
    changelog = [v for t, v in producer.committed[1] if t == CHANGELOG]
    reopened.restore_batch([(b"b", changelog[0])], last_offset=1)
    assert dict(reopened.items()) == {b"a": b"entry a", b"b": b"entry b"}
    reopened.close()


def test_an_abort_never_commits(parts: Parts, store: PartitionStore) -> None:
    """Leaving a worker through a failure aborts what is open."""
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    checkpoint.abort_on_failure("a processor bug")
    assert "commit" not in producer.calls and producer.calls[-1] == "abort"
    assert not checkpoint.open and store.staged == 0


def test_the_pause_hook_holds_the_open_transaction(
    parts: Parts, store: PartitionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    pause = tmp_path / "pause"
    pause.touch()
    checkpoint._pause_file = pause
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        pause.unlink()  # the test lets go

    monkeypatch.setattr("streamfold.runtime.checkpoint.time.sleep", sleep)
    process(checkpoint, store, 10, "a")
    assert (tmp_path / "pause.held").exists() and slept
    assert producer.open


def test_fencing_reported_inside_a_delivery_callback_is_fencing(
    parts: Parts, store: PartitionStore
) -> None:
    """librdkafka's fatal error during flush's callbacks surfaces as a SystemError."""
    checkpoint, producer, _consumer, _metrics = parts
    process(checkpoint, store, 10, "a")
    try:
        raise _error(KafkaError._FENCED, fatal=True)
    except KafkaException:
        try:
            raise SystemError("callback returned a result with an exception set")
        except SystemError as wrapped:
            producer.fail["flush"] = [wrapped]
    with pytest.raises(FencedError):
        checkpoint.commit()
    assert list(store.items()) == []


def test_a_second_failed_commit_in_a_row_asks_for_every_delivery_report(
    parts: Parts, store: PartitionStore
) -> None:
    """Whatever the commit's error says, a batch that keeps failing looks for its record."""
    checkpoint, producer, _consumer, _metrics = parts
    for _ in range(2):
        process(checkpoint, store, 10, "a")
        producer.fail["commit"] = [_error(KafkaError._STATE)]
        assert not checkpoint.commit()
    process(checkpoint, store, 10, "a")
    assert "on_delivery" in producer.pending[0][2]


class HangingProducer(FakeProducer):
    """``send_offsets_to_transaction`` never returns, as librdkafka's did with the group
    coordinator's broker SIGKILLed (confluentinc/librdkafka#5456)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("send_offsets")
        self.release.wait()


def test_a_transactional_call_that_never_returns_is_taken_for_a_fence(
    store: PartitionStore,
) -> None:
    producer = HangingProducer()
    checkpoint, _producer, _consumer, _metrics = make_parts(producer, hung_after_s=0.3)
    process(checkpoint, store, 10, "a")
    started = time.monotonic()
    try:
        with pytest.raises(ProducerHungError, match=r"sending offsets: no answer in 0\.3 s"):
            checkpoint.commit()
        assert time.monotonic() - started < 5
        assert isinstance(checkpoint.fenced, FencedError)  # the producer is not used again
        assert not checkpoint.open and producer.calls[-1] == "send_offsets"
        assert store.changelog_offset is None and dict(store.items()) == {}  # not committed
        # The next call (another checkpoint's, after a restart) is not stuck behind it.
        assert checkpoint._bounded(lambda: 42) == 42
    finally:
        producer.release.set()


def test_a_bounded_call_raises_the_calls_own_error(parts: Parts, store: PartitionStore) -> None:
    checkpoint, producer, _consumer, _metrics = parts
    producer.fail["send_offsets"] = [_error(KafkaError.PRODUCER_FENCED, fatal=True)]
    process(checkpoint, store, 10, "a")
    with pytest.raises(FencedError, match="fenced while committing") as caught:
        checkpoint.commit()
    assert not isinstance(caught.value, ProducerHungError)
