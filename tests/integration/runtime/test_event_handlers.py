"""An event handler on the real broker: exactly-once emissions, retries, a parked
aggregate that holds only its own events back, and its release from the DLQ in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamfold.contracts import headers as h
from streamfold.domain.naming import handler_topics
from streamfold.transport.reading import read_to_end

from .conftest import TimedRun, worker_metrics
from .timed import Ring, Schedule

pytestmark = [pytest.mark.integration]


def echoes(run: TimedRun) -> list[dict[str, Any]]:
    topic = f"{run.prefix}timed.echoes"
    return [json.loads(m.value() or b"{}") for m in read_to_end(run.settings, topic)]


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)
    return value


def streamfold(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "streamfold"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )


def test_a_failing_aggregate_is_parked_alone_and_a_retry_resumes_it_in_order(
    timed_run: TimedRun,
) -> None:
    fixed = timed_run.directory / "echo-fixed"
    worker = timed_run.worker("t1", TIMED_ECHO_FIXED_FILE=str(fixed))
    good = [f"r-{i}" for i in range(20)]
    for reminder in ["bad-1", *good[:10]]:
        timed_run.producer.send(Schedule(reminder_id=reminder, delay_seconds=3600))
    timed_run.producer.flush()
    wait_for(lambda: len(echoes(timed_run)) >= 10, 60, "ten echoes")
    # bad-1 is parked: its next event waits behind the first; other aggregates go on.
    timed_run.producer.send(Ring(reminder_id="bad-1"))
    for reminder in good[10:]:
        timed_run.producer.send(Schedule(reminder_id=reminder, delay_seconds=3600))
    timed_run.producer.flush()
    wait_for(lambda: len(echoes(timed_run)) >= 20, 60, "twenty echoes")
    topics = handler_topics("timed", "echo", timed_run.prefix)
    letters = [
        (h.header_map(m.headers())[h.DLQ_REASON], (m.key() or b"").decode())
        for m in read_to_end(timed_run.settings, topics.dlq)
    ]
    assert letters == [("handler_error", "bad-1"), ("parked_behind", "bad-1")]
    assert {e["reminder_id"] for e in echoes(timed_run)} == set(good)
    metrics = worker_metrics(worker)
    assert metrics["streamfold_worker_handler_parked_aggregates"] == 1
    listed = streamfold(
        "dlq",
        "parked",
        "timed",
        "--handler",
        "echo",
        "--prefix",
        timed_run.prefix,
        "--bootstrap",
        timed_run.settings.bootstrap_servers,
    )
    assert listed.returncode == 0, listed.stderr
    assert "bad-1" in listed.stdout and "parked" in listed.stdout
    # The endpoint is fixed; a retry from the DLQ handles both events, in order, once.
    fixed.touch()
    asked = streamfold(
        "dlq",
        "retry",
        "timed",
        "bad-1",
        "--handler",
        "echo",
        "--prefix",
        timed_run.prefix,
        "--bootstrap",
        timed_run.settings.bootstrap_servers,
    )
    assert asked.returncode == 0, asked.stderr
    wait_for(lambda: len(echoes(timed_run)) >= 22, 60, "the parked events echoed")
    time.sleep(2)
    found = echoes(timed_run)
    assert [(e["reminder_id"], e["event"]) for e in found if e["reminder_id"] == "bad-1"] == [
        ("bad-1", "Scheduled"),
        ("bad-1", "Rang"),
    ]
    per_event = Counter((e["reminder_id"], e["event"]) for e in found)
    assert set(per_event.values()) == {1}, "an event was echoed twice"
    assert len({e["key"] for e in found}) == len(found)  # one idempotency key per event
    assert worker_metrics(worker)["streamfold_worker_handler_parked_aggregates"] == 0


def test_a_skip_drops_the_failed_event_and_handles_those_behind_it(timed_run: TimedRun) -> None:
    fixed = timed_run.directory / "echo-fixed"
    timed_run.worker("t1", TIMED_ECHO_FIXED_FILE=str(fixed))
    timed_run.producer.send(Schedule(reminder_id="bad-2", delay_seconds=3600))
    timed_run.producer.send(Schedule(reminder_id="r-0", delay_seconds=3600))
    timed_run.producer.flush()
    wait_for(lambda: echoes(timed_run), 60, "r-0's echo")
    timed_run.producer.send(Ring(reminder_id="bad-2"))  # waits behind the failed Scheduled
    timed_run.producer.flush()
    topics = handler_topics("timed", "echo", timed_run.prefix)
    wait_for(lambda: len(list(read_to_end(timed_run.settings, topics.dlq))) >= 2, 60, "two letters")
    fixed.touch()
    skipped = streamfold(
        "dlq",
        "skip",
        "timed",
        "bad-2",
        "--handler",
        "echo",
        "--prefix",
        timed_run.prefix,
        "--bootstrap",
        timed_run.settings.bootstrap_servers,
    )
    assert skipped.returncode == 0, skipped.stderr
    wait_for(lambda: len(echoes(timed_run)) >= 2, 60, "bad-2's Rang echoed")
    time.sleep(2)
    assert sorted((e["reminder_id"], e["event"]) for e in echoes(timed_run)) == [
        ("bad-2", "Rang"),
        ("r-0", "Scheduled"),
    ]
    listed = streamfold(
        "dlq",
        "parked",
        "timed",
        "--handler",
        "echo",
        "--prefix",
        timed_run.prefix,
        "--bootstrap",
        timed_run.settings.bootstrap_servers,
    )
    assert "no aggregate is parked" in listed.stdout
