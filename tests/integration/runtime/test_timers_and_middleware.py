"""Durable timers through crashes and rebalances, and middleware on every path, on the real
broker (the ``timed`` domain: a reminder rings when its alarm saga's timer comes due)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from streamfold.contracts import headers as h
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.reading import read_to_end

from .conftest import TimedRun, worker_metrics
from .timed import Hold, Rang, Ring, Schedule, timed

pytestmark = [pytest.mark.integration]


def rings(run: TimedRun) -> list[tuple[str, int, dict[str, str]]]:
    """The Ring commands the alarm saga sent: (reminder, timestamp ms, headers)."""
    reader = run.codec.reader(Ring, Schedule, namespace=timed.namespace)
    found = []
    for message in read_to_end(run.settings, run.topics.commands):
        headers = h.header_map(message.headers())
        if headers.get(h.SAGA) == "timed.alarm":
            command = reader.decode(message.value() or b"")
            assert isinstance(command, Ring)
            found.append((command.reminder_id, message.timestamp()[1], headers))
    return found


def rang(run: TimedRun) -> Counter[str]:
    reader = run.codec.reader(Rang, namespace=timed.namespace)
    count: Counter[str] = Counter()
    for message in read_to_end(run.settings, run.topics.events):
        if h.header_map(message.headers()).get(h.MESSAGE_TYPE) == "Rang":
            event = reader.decode(message.value() or b"")
            assert isinstance(event, Rang)
            count[event.reminder_id] += 1
    return count


def schedule(run: TimedRun, reminder: str, delay: int, **headers: str) -> tuple[str, float]:
    """Schedule a reminder; its command id and the earliest instant it may ring (s)."""
    command_id = run.producer.send(Schedule(reminder_id=reminder, delay_seconds=delay), **headers)
    return command_id, time.time() + delay


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)
    return value


def test_a_timer_set_before_a_sigkill_fires_once_after_the_restart_and_not_before(
    timed_run: TimedRun,
) -> None:
    worker = timed_run.worker("t1")
    _, earliest = schedule(timed_run, "r-1", 12)
    timed_run.producer.flush()
    # The saga has taken the event (its timer is committed) before the crash.
    wait_for(
        lambda: worker_metrics(worker).get("streamfold_worker_saga_inputs_total", 0) >= 1,
        60,
        "the alarm to be set",
    )
    worker.kill()
    time.sleep(2)
    worker.start(timeout=120)
    found = wait_for(lambda: rings(timed_run), 60, "the reminder to ring")
    time.sleep(3)  # a second firing would land by now
    found = rings(timed_run)
    assert [r for r, _, _ in found] == ["r-1"]
    (_, stamp, headers) = found[0]
    assert stamp / 1000 >= earliest - 1  # the timer's due time is counted from the event's
    assert headers[h.CAUSATION_ID].startswith("timer/ring/")
    assert rang(timed_run) == {"r-1": 1}
    assert worker_metrics(worker)["streamfold_worker_timers_fired_total"] == 1


def test_a_thousand_timers_across_partitions_fire_once_through_a_rebalance(
    timed_run: TimedRun, test_scale: float
) -> None:
    timed_run.worker("t1")
    count = scaled(1_000, test_scale, 300)
    earliest: dict[str, float] = {}
    for index in range(count):
        reminder = f"r-{index}"
        _, earliest[reminder] = schedule(timed_run, reminder, 6 + index % 9)
    timed_run.producer.flush()
    time.sleep(3)
    second = timed_run.worker("t2")  # a rebalance while the timers are pending and firing
    wait_for(lambda: len(rings(timed_run)) >= count, 180, f"{count} rings")
    time.sleep(3)
    found = rings(timed_run)
    by_reminder = Counter(r for r, _, _ in found)
    assert set(by_reminder) == set(earliest)
    assert set(by_reminder.values()) == {1}, "a timer fired twice"
    early = [r for r, stamp, _ in found if stamp / 1000 < earliest[r] - 1]
    assert early == [], f"{len(early)} timers fired before their time"
    assert rang(timed_run) == Counter(dict.fromkeys(earliest, 1))
    assert worker_metrics(second)["streamfold_worker_assigned_partitions"] > 0


def test_middleware_rejects_a_forbidden_principal_from_kafka_and_from_a_saga(
    timed_run: TimedRun,
) -> None:
    worker = timed_run.worker("t1")
    from_kafka, _ = schedule(timed_run, "r-1", 1, principal="mallory")
    allowed, _ = schedule(timed_run, "vip-1", 1, principal="alice")
    timed_run.producer.flush()
    found = wait_for(lambda: rings(timed_run), 60, "the alarm's ring")
    (reminder, _, headers) = found[0]
    assert reminder == "vip-1"

    def result_of(command_id: str) -> Any:
        return timed_run.results().get(command_id)

    (kafka_result,) = wait_for(lambda: result_of(from_kafka), 60, "mallory's result")
    assert (kafka_result["outcome"], kafka_result["code"]) == ("rejected", "forbidden")
    assert wait_for(lambda: result_of(allowed), 60, "alice's result")[0]["outcome"] == "accepted"
    (saga_result,) = wait_for(lambda: result_of(headers[h.COMMAND_ID]), 60, "the ring's result")
    assert (saga_result["outcome"], saga_result["code"]) == ("rejected", "forbidden")
    # Nobody handles that rejection: it is counted and logged with the saga id.
    wait_for(
        lambda: worker_metrics(worker).get("streamfold_worker_saga_unhandled_outcomes_total"),
        60,
        "the unhandled outcome to be counted",
    )
    log = (timed_run.directory / "worker-t1.log").read_text(encoding="utf-8")
    assert '"saga_id": "vip-1"' in log and "no handler took its outcome" in log
    assert "tests.integration.runtime.timed.guard" in log  # the order printed at start


def test_an_aggregates_own_timer_fires_once_after_a_sigkill_and_never_early(
    timed_run: TimedRun,
) -> None:
    worker = timed_run.worker("t1")
    timed_run.producer.send(Schedule(reminder_id="h-1", delay_seconds=3600))
    held_at = time.time()
    timed_run.producer.send(Hold(reminder_id="h-1", seconds=8))
    timed_run.producer.flush()
    wait_for(lambda: "Held" in event_types(timed_run, "h-1"), 60, "the hold")
    worker.kill()  # the timer is in the committed entry and the changelog
    time.sleep(2)
    worker.start(timeout=120)
    wait_for(lambda: "Released" in event_types(timed_run, "h-1"), 60, "the release")
    time.sleep(3)
    assert event_types(timed_run, "h-1") == ["Scheduled", "Held", "Released"]
    released = next(
        m
        for m in read_to_end(timed_run.settings, timed_run.topics.events)
        if h.header_map(m.headers()).get(h.MESSAGE_TYPE) == "Released"
    )
    assert released.timestamp()[1] / 1000 >= held_at + 8 - 1
    headers = h.header_map(released.headers())
    assert headers[h.CAUSATION_ID].startswith("timer/release/")
    assert headers[h.AGGREGATE_VERSION] == "3"


def event_types(run: TimedRun, reminder: str) -> list[str]:
    return [
        h.header_map(m.headers()).get(h.MESSAGE_TYPE, "")
        for m in read_to_end(run.settings, run.topics.events)
        if m.key() == reminder.encode()
    ]
