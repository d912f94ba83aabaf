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


def test_a_fenced_handler_rejoins_and_echoes_each_event_once(timed_run: TimedRun) -> None:
    """A handler paused inside its open transaction, past its session and the transaction's
    timeout: another takes its partitions, the broker aborts the transaction. Woken up, the
    zombie finds its producer fenced; it rejoins with a new one instead of taking its
    process down, and every event is echoed once."""
    directory = timed_run.directory
    aggregates = directory / "aggregates.yaml"
    aggregates.write_text(
        "name: timed\ncontext: tests.integration.runtime.timed:timed\n"
        "aggregates: [reminder]\nsagas: []\nhandlers: []\n",
        encoding="utf-8",
    )
    handlers = directory / "handlers.yaml"
    handlers.write_text(
        "name: timed\ncontext: tests.integration.runtime.timed:timed\n"
        "aggregates: []\nsagas: []\nhandlers: [echo]\n",
        encoding="utf-8",
    )
    timed_run.worker("w1", topology=aggregates)
    hold = directory / "hold-h1"
    zombie = timed_run.worker(
        "h1",
        topology=handlers,
        STREAMFOLD_WORKER_SESSION_TIMEOUT_MS="6000",
        STREAMFOLD_WORKER_TRANSACTION_TIMEOUT_MS="10000",
        STREAMFOLD_WORKER_PAUSE_IN_TRANSACTION_FILE=str(hold),
    )
    sent: list[str] = []

    def send(count: int) -> None:
        for _ in range(count):
            reminder = f"r-{len(sent)}"
            timed_run.producer.send(Schedule(reminder_id=reminder, delay_seconds=3600))
            sent.append(reminder)
        timed_run.producer.flush()

    send(20)
    wait_for(lambda: len(echoes(timed_run)) >= 20, 60, "twenty echoes")
    hold.touch()  # the zombie's next transaction stays open once it has echoed
    send(20)
    wait_for(lambda: hold.with_name("hold-h1.held").exists(), 60, "the zombie to hold")
    zombie.pause()
    hold.unlink()
    try:
        timed_run.worker("h2", topology=handlers)
        wait_for(lambda: len(echoes(timed_run)) >= 40, 120, "forty echoes")
    finally:
        zombie.resume()
    assert zombie.log_file is not None
    log_file = zombie.log_file

    def rejoined() -> bool:
        assert zombie.running(), "the fenced handler took its process down"
        return "the event handler was fenced; rejoining" in log_file.read_text("utf-8")

    wait_for(rejoined, 120, "the zombie to find out it was fenced")
    send(40)
    wait_for(lambda: len(echoes(timed_run)) >= 80, 120, "eighty echoes")
    time.sleep(2)
    found = Counter(e["reminder_id"] for e in echoes(timed_run))
    assert set(found) == set(sent)
    assert set(found.values()) == {1}, "an event was echoed twice"
    assert zombie.running()
