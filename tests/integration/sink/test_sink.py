"""The sink on the real broker, real workers and the real ClickHouse engine (chDB)."""

from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from tests.integration.runtime.conftest import RetailRun
from topologies.retail.domain import RecordSale, retail
from topologies.retail.workload import stock_commands

from streamfold.contracts.codec import RecordReader
from streamfold.domain.naming import context_topics
from streamfold.embedded.ports import free_ports
from streamfold.sink.batches import intent, parse_intent
from streamfold.sink.connector import SinkConnector
from streamfold.sink.process import SinkProcess
from streamfold.sink.progress import caught_up, record_ends
from streamfold.sink.rebuild import rebuild
from streamfold.sink.recording import RecordingTarget
from streamfold.sink.spec import ConnectorSpec
from streamfold.sink.target import ClickHouseTarget
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.reading import read_to_end

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _spec(run: RetailRun, **extra: Any) -> ConnectorSpec:
    values: dict[str, Any] = {
        "name": "retail",
        "context": "topologies.retail.domain:retail",
        "aggregates": ["store_stock"],
        "target": f"chdb:{run.directory / 'clickhouse'}",
        "database": "retail",
        "topic_prefix": run.prefix,
        "batch_rows": 2_000,
        "batch_interval_ms": 100,
    }
    return ConnectorSpec(**{**values, **extra})


def _produce(run: RetailRun, aggregates: int, commands: int) -> tuple[set[str], int]:
    """Send the commands; return their ids and how many are sales."""
    workload = list(stock_commands(aggregates, commands, seed=5))
    sent = {run.producer.send(c) for c in workload}
    run.producer.flush()
    return sent, sum(isinstance(c, RecordSale) for c in workload)


def _records(run: RetailRun, topic: str) -> list[Any]:
    return list(read_to_end(run.settings, topic, timeout=10))


def _latest_states(run: RetailRun) -> dict[str, dict[str, Any]]:
    reader = RecordReader(run.codec, ())
    latest: dict[str, dict[str, Any]] = {}
    for message in _records(run, run.stock_topics.state):
        latest[(message.key() or b"").decode()] = reader.decode_dict(message.value())[1]
    return latest


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_state_events_results_and_commands_are_projected_with_acks(
    retail_run: RetailRun, test_scale: float
) -> None:
    run = retail_run
    run.worker("w1")  # it creates the topics
    sent, sales = _produce(run, scaled(2_000, test_scale, 200), scaled(10_000, test_scale, 2_000))
    run.wait_until_processed(sent)
    events = len(_records(run, run.stock_topics.events))
    spec = _spec(run)
    target = ClickHouseTarget(spec.target, "retail")
    sink = SinkConnector(spec, retail, run.settings, run.codec, target)

    def projected() -> bool:
        _c, rows = target.query("SELECT count() FROM retail.retail_command_results")
        return int(rows[0][0]) >= len(sent)

    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: sink.ready and projected(), 120, "the results to be projected")
        _wait(
            lambda: (
                int(target.query("SELECT count() FROM retail.retail_store_stock_events")[1][0][0])
                >= events
            ),
            60,
            "the events",
        )
    finally:
        sink.stop()
        thread.join(60)
    # one row per result and per event, no duplicates
    _c, rows = target.query(
        "SELECT count(), uniqExact(command_id) FROM retail.retail_command_results"
    )
    assert rows[0] == (len(sent), len(sent))
    _c, rows = target.query(
        "SELECT count(), uniqExact(aggregate_id, version) FROM retail.retail_store_stock_events"
    )
    assert rows[0] == (events, events)
    # the latest state of every aggregate equals the worker's
    latest = _latest_states(run)
    _c, rows = target.query(
        "SELECT aggregate_id, on_hand, sold_amount FROM retail.retail_store_stock_state_last FINAL"
    )
    assert {r[0]: (r[1], Decimal(r[2])) for r in rows} == {
        k: (v["on_hand"], v["sold_amount"]) for k, v in latest.items()
    }
    # the audit view: every command with its outcome; rejections with their code
    _c, rows = target.query(
        "SELECT outcome, code, count() FROM retail.retail_commands GROUP BY outcome, code"
    )
    outcomes = {(r[0], r[1]): r[2] for r in rows}
    assert sum(outcomes.values()) == len(sent)
    assert outcomes.get(("rejected", "insufficient_stock"), 0) > 0
    _c, rows = target.query(
        "SELECT count() FROM retail.retail_commands WHERE command_type = 'RecordSale' "
        "AND payload LIKE '%sale_id%' AND latency_ms >= 0"
    )
    assert rows[0][0] == sales
    # a PROJECTED ack for every command
    acked = {
        (m.key() or b"").decode()
        for m in _records(run, context_topics("retail", run.prefix).projected)
    }
    assert sent <= acked
    # a rebuilt table equals the live one
    events_sql = (
        "SELECT aggregate_id, version, event_type, command_id, sale_id, quantity, amount, "
        "payload FROM retail.retail_store_stock_events ORDER BY aggregate_id, version"
    )
    state_sql = (
        "SELECT aggregate_id, version, deleted, on_hand, sold_amount "
        "FROM retail.retail_store_stock_state_last FINAL ORDER BY aggregate_id"
    )
    live_events, live_state = target.query(events_sql)[1], target.query(state_sql)[1]
    for table in ("retail_store_stock_events", "retail_store_stock_state_last"):
        rebuild(spec, retail, run.settings, run.codec, target, table)
    assert target.query(events_sql)[1] == live_events
    assert target.query(state_sql)[1] == live_state
    _c, tables = target.query("SELECT name FROM system.tables WHERE database = 'retail'")
    assert not [t for (t,) in tables if t.endswith("__rebuild")]
    target.close()


def test_a_sink_projects_through_the_seam_into_a_target_that_is_not_clickhouse(
    retail_run: RetailRun, test_scale: float
) -> None:
    """The in-memory recording target: the sink's loop depends only on SinkTarget (and it
    decodes every batch in Python, the recording target decoding no Avro)."""
    run = retail_run
    run.worker("w1")
    sent, _sales = _produce(run, scaled(1_000, test_scale, 100), scaled(5_000, test_scale, 1_000))
    run.wait_until_processed(sent)
    events = len(_records(run, run.stock_topics.events))
    target = RecordingTarget("retail")
    sink = SinkConnector(_spec(run), retail, run.settings, run.codec, target)

    def rows(table: str) -> list[dict[str, Any]]:
        names = [c.name for c in target.tables[table].columns]
        return [dict(zip(names, row, strict=True)) for row in list(target.rows[table])]

    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        _wait(
            lambda: (
                sink.ready
                and len(target.rows["retail_command_results"]) >= len(sent)
                and len(target.rows["retail_store_stock_events"]) >= events
            ),
            120,
            "the results and events in the recording target",
        )
    finally:
        sink.stop()
        thread.join(60)
    results = rows("retail_command_results")
    assert sorted(r["command_id"] for r in results) == sorted(sent)
    stored = rows("retail_store_stock_events")
    assert len({(r["aggregate_id"], r["version"]) for r in stored}) == len(stored) == events
    last: dict[str, dict[str, Any]] = {}
    for row in rows("retail_store_stock_state_last"):
        if row["aggregate_id"] not in last or row["version"] > last[row["aggregate_id"]]["version"]:
            last[row["aggregate_id"]] = row
    assert {k: (v["on_hand"], v["sold_amount"]) for k, v in last.items()} == {
        k: (v["on_hand"], v["sold_amount"]) for k, v in _latest_states(run).items()
    }
    acked = {
        (m.key() or b"").decode()
        for m in _records(run, context_topics("retail", run.prefix).projected)
    }
    assert sent <= acked


def _batches(process: SinkProcess) -> float:
    """The sink's durable batches so far, from its /metrics."""
    try:
        with urllib.request.urlopen(f"{process.health_url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("streamfold_sink_batches_total "):
            return float(line.split()[1])
    return 0.0


def _progress(consumer: Consumer, ends: dict[tuple[str, int], int]) -> float:
    """The share of the records up to ``ends`` that the consumer's group has committed."""
    partitions = [TopicPartition(t, p) for t, p in ends]
    done = sum(
        min(max(tp.offset, 0), ends[(tp.topic, tp.partition)])
        for tp in consumer.committed(partitions, timeout=30)
    )
    return done / max(1, sum(ends.values()))


def _open_intents(
    consumer: Consumer, ends: dict[tuple[str, int], int], patience: float = 0.0
) -> int:
    """Partitions whose committed offset carries an unfinished batch's intent; with
    ``patience``, looking again until one does or ``patience`` s have passed."""
    partitions = [TopicPartition(t, p) for t, p in ends]
    deadline = time.monotonic() + patience
    while True:
        found = sum(
            parse_intent(tp.metadata) is not None
            for tp in consumer.committed(partitions, timeout=30)
        )
        if found or time.monotonic() >= deadline:
            return found


def _sink_process(
    run: RetailRun,
    spec: ConnectorSpec,
    directory: Path,
    ready_when: str = "ready",
    extra_env: dict[str, str] | None = None,
) -> SinkProcess:
    spec_file = directory / "sink.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    (port,) = free_ports(1)
    process = SinkProcess(
        spec_file,
        bootstrap_servers=run.settings.bootstrap_servers,
        registry_url=run.registry_url,
        health_port=port,
        log_file=directory / "sink.log",
        ready_when=ready_when,
        extra_env=extra_env,
    )
    process.start(timeout=120)
    return process


def _assert_exactly_once(target: ClickHouseTarget, sent: set[str], events: int) -> None:
    _c, rows = target.query(
        "SELECT count(), uniqExact(aggregate_id, version) FROM retail.retail_store_stock_events"
    )
    assert rows[0] == (events, events)
    _c, rows = target.query(
        "SELECT count(), uniqExact(command_id) FROM retail.retail_command_results"
    )
    assert rows[0] == (len(sent), len(sent))
    _c, rows = target.query("SELECT count(), uniqExact(command_id) FROM retail.retail_command_log")
    assert rows[0] == (len(sent), len(sent))
    _c, rows = target.query(
        "SELECT count(), uniqExact(_partition, _offset) FROM retail.retail_store_stock_state"
    )
    assert rows[0][0] == rows[0][1] > 0


def test_a_sink_is_ready_once_it_has_joined_its_group(retail_run: RetailRun) -> None:
    """``/readyz`` means records produced now are read now: not before the group's first
    assignment, which comes a second or so after ``start()``."""
    run = retail_run
    run.worker("w1")  # it creates the topics
    spec = _spec(run)
    target = ClickHouseTarget(spec.target, "retail")
    sink = SinkConnector(spec, retail, run.settings, run.codec, target)
    try:
        sink.start()
        assert not sink.ready
        deadline = time.monotonic() + 60
        while not sink.ready:
            assert time.monotonic() < deadline, "the sink never joined its group"
            sink.step()
        consumer = sink._consumer
        assert consumer is not None and consumer.assignment()  # alone in its group: all of it
    finally:
        sink.close()
        target.close()
    assert not sink.ready


@pytest.mark.timeout(3600)
def test_killed_sinks_lose_nothing_and_double_nothing(
    retail_run: RetailRun, test_scale: float, tmp_path: Path
) -> None:
    run = retail_run
    run.worker("w1")
    # Full scale: 1.35M commands over 10k aggregates: 1.33M events, as many states, 1.35M
    # results and commands (5.4M records).
    # (CI's fractional scales count from 270k commands: the full run is the long one.)
    full = 1_350_000 if test_scale >= 1 else 270_000
    aggregates, commands = scaled(10_000, test_scale, 300), scaled(full, test_scale, 5_000)
    sent, _sales = _produce(run, aggregates, commands)
    run.wait_until_processed(sent, timeout=1800)
    events = len(_records(run, run.stock_topics.events))
    spec = _spec(run, batch_rows=5_000)
    ends = record_ends(
        run.settings,
        [
            run.stock_topics.events,
            run.stock_topics.state,
            run.stock_topics.results,
            run.stock_topics.commands,
        ],
    )
    rng = random.Random(11)
    kills = inside = 0  # kills, and those that landed inside an unfinished batch
    committed = Consumer(run.settings.consumer_config(spec.group_id))  # reads, never joins
    try:
        for i in range(5):
            process = _sink_process(run, spec, tmp_path)
            # Kill it while it works: once it has made a batch durable, at a random moment
            # of the i-th sixth of the whole run (by committed offsets, so that a fast sink
            # on a quiet machine is still killed five times, and a slow one not too early).
            _wait(lambda p=process: _batches(p) > 0, 120, "the sink's first batch")
            moment = (i + rng.random()) / 6
            deadline = time.monotonic() + 600
            while _progress(committed, ends) < moment and time.monotonic() < deadline:
                time.sleep(0.02)
            if caught_up(run.settings, spec.group_id, ends):
                process.stop()
                break
            # Aim: kill as soon as a batch's intent is committed (the batch is unfinished).
            _open_intents(committed, ends, patience=10.0)
            process.kill()
            kills += 1
            inside += _open_intents(committed, ends) > 0
    finally:
        committed.close()
    process = _sink_process(run, spec, tmp_path)
    try:
        _wait(lambda: caught_up(run.settings, spec.group_id, ends), 1800, "the sink to catch up")
    finally:
        process.stop()
    assert kills >= 3, "the sink caught up before it could be killed: raise the scale"
    assert inside >= 1, f"none of {kills} kills landed inside an unfinished batch"
    replays = (tmp_path / "sink.log").read_text().count("replaying an unfinished batch")
    assert replays >= 1, "a kill landed inside a batch, and its intents were never replayed"
    target = ClickHouseTarget(spec.target, "retail")
    try:
        _assert_exactly_once(target, sent, events)
    finally:
        target.close()


def test_an_unavailable_target_loses_nothing_and_doubles_nothing(
    retail_run: RetailRun, test_scale: float, tmp_path: Path
) -> None:
    """chDB made unavailable: another process owns the path (as a second sink on the same
    path would) for 60 s at full scale; a server that is down looks the same to the sink."""
    run = retail_run
    run.worker("w1")
    first, _ = _produce(run, 500, scaled(10_000, test_scale, 2_000))
    spec = _spec(run)
    holder = ClickHouseTarget(spec.target, "retail")
    holder.query("SELECT 1")  # this process owns the chDB path now
    process = _sink_process(run, spec, tmp_path, ready_when="alive")
    try:
        outage = max(10.0, 60.0 * test_scale)
        started = time.monotonic()
        time.sleep(outage / 2)
        with urllib.request.urlopen(f"{process.health_url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "streamfold_sink_target_up 0.0" in metrics
        assert "streamfold_sink_target_retries_total" in metrics
        with pytest.raises(urllib.error.HTTPError, match="503"):  # alive, not ready
            urllib.request.urlopen(f"{process.health_url}/readyz", timeout=5)
        more = {run.producer.send(c) for c in stock_commands(500, scaled(5_000, test_scale, 1_000))}
        run.producer.flush()
        time.sleep(max(0.0, outage - (time.monotonic() - started)))
        holder.close()  # the target is back
        sent = first | more
        run.wait_until_processed(sent, timeout=300)
        events = len(_records(run, run.stock_topics.events))
        topics = run.stock_topics
        ends = record_ends(
            run.settings, [topics.events, topics.state, topics.results, topics.commands]
        )
        _wait(lambda: caught_up(run.settings, spec.group_id, ends), 300, "the sink to catch up")
    finally:
        process.stop()
        holder.close()
    target = ClickHouseTarget(spec.target, "retail")
    try:
        _assert_exactly_once(target, sent, events)
    finally:
        target.close()


class _Crash(BaseException):
    """The sink process dies here (not an error the sink handles)."""


class _CrashingTarget(ClickHouseTarget):
    """Dies right after its ``crash_after``-th insert has landed."""

    def __init__(self, target: str, database: str, crash_after: int) -> None:
        super().__init__(target, database)
        self.inserts = 0
        self.crash_after = crash_after

    def insert_columns(self, table: Any, columns: Any, token: str) -> None:
        super().insert_columns(table, columns, token)
        self._landed(table)

    def insert_avro(self, table: Any, parts: Any, token: str) -> None:
        super().insert_avro(table, parts, token)
        self._landed(table)

    def _landed(self, table: Any) -> None:
        self.inserts += 1
        if self.inserts == self.crash_after:
            raise _Crash(f"after inserting into {table.name}")


def _claim_a_missing_range(
    run: RetailRun, spec: ConnectorSpec, topics: list[str], partitions: int
) -> int:
    """Rewrite each open intent as one range short of its batch (its batch-mate owned by
    another sink); return how many intents were rewritten."""
    consumer = Consumer(run.settings.consumer_config(spec.group_id))
    try:
        wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        rewritten = []
        for tp in consumer.committed(wanted, timeout=30):
            found = parse_intent(tp.metadata)
            if found is not None and found.group is not None:
                metadata = intent(found.last, found.group, found.members + 1)
                rewritten.append(TopicPartition(tp.topic, tp.partition, tp.offset, metadata))
        if rewritten:
            consumer.commit(offsets=rewritten, asynchronous=False)
        return len(rewritten)
    finally:
        consumer.close()


@pytest.mark.parametrize("batch_mate_elsewhere", [False, True], ids=["whole", "alone"])
def test_a_sink_dying_inside_a_batch_is_replayed_without_doubles(
    retail_run: RetailRun, test_scale: float, batch_mate_elsewhere: bool
) -> None:
    """A batch holds one range per partition of a topic. The sink dies after some of its
    inserts landed; the next sink re-forms the batch (same tokens: ClickHouse drops what had
    landed) or, when another sink owns some of its ranges, replays each range it owns alone,
    leaving the tables that hold its rows already."""
    run = retail_run
    run.worker("w1")
    sent, _sales = _produce(run, 300, scaled(5_000, test_scale, 2_000))
    run.wait_until_processed(sent)
    topics = [
        run.stock_topics.events,
        run.stock_topics.state,
        run.stock_topics.results,
        run.stock_topics.commands,
    ]
    events = len(_records(run, run.stock_topics.events))
    ends = record_ends(run.settings, topics)
    partitions = len({p for _topic, p in ends})
    # One flush of everything: each topic one batch of all its partitions, five inserts
    # (state_last, command_results, then state, events, command_log). Die after the fourth.
    spec = _spec(run, batch_rows=1_000_000, batch_interval_ms=3_000, log_interval_ms=3_000)
    dying = _CrashingTarget(spec.target, "retail", crash_after=4)
    sink = SinkConnector(spec, retail, run.settings, run.codec, dying)
    with pytest.raises(_Crash):
        sink.run()
    dying.close()
    if batch_mate_elsewhere:
        assert _claim_a_missing_range(run, spec, topics, partitions) == len(topics) * partitions
    target = ClickHouseTarget(spec.target, "retail")
    sink = SinkConnector(spec, retail, run.settings, run.codec, target)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: caught_up(run.settings, spec.group_id, ends), 120, "the sink to catch up")
    finally:
        sink.stop()
        thread.join(60)
    replays = {how: sink.metrics.replays.labels(how)._value.get() for how in ("batch", "alone")}
    expected = "alone" if batch_mate_elsewhere else "batch"
    assert replays[expected] == len(topics) * partitions, replays
    try:
        _assert_exactly_once(target, sent, events)
    finally:
        target.close()


def test_a_sink_paused_past_its_session_rejoins_and_doubles_nothing(
    retail_run: RetailRun, test_scale: float, tmp_path: Path
) -> None:
    """Frozen (SIGSTOP) right before it commits a flush's intents, for longer than its
    session: the group drops it. Woken up, its intents are refused (the group moved on
    without it); it drops what it read, rejoins in process, reads it all again from the
    committed offsets, and projects every record once."""
    run = retail_run
    run.worker("w1")
    sent, _sales = _produce(run, 300, scaled(10_000, test_scale, 2_000))
    run.wait_until_processed(sent)
    events = len(_records(run, run.stock_topics.events))
    topics = [
        run.stock_topics.events,
        run.stock_topics.state,
        run.stock_topics.results,
        run.stock_topics.commands,
    ]
    ends = record_ends(run.settings, topics)
    spec = _spec(run, instance_id="sink-a", batch_rows=500)
    hold = tmp_path / "hold"
    hold.touch()  # its first flush holds before the intents
    process = _sink_process(
        run, spec, tmp_path, extra_env={"STREAMFOLD_SINK_HOLD_BEFORE_INTENT_FILE": str(hold)}
    )
    admin = AdminClient(run.settings.admin_config())
    try:
        _wait(lambda: hold.with_name("hold.held").exists(), 60, "the sink to hold a flush")
        process.pause()
        try:
            # Its session ends: the coordinator removes the member (static or not).
            def members() -> int:
                future = admin.describe_consumer_groups([spec.group_id], request_timeout=10)
                return len(future[spec.group_id].result().members)

            _wait(lambda: members() == 0, 60, "the paused sink to leave its group")
            hold.unlink()
        finally:
            process.resume()

        def caught_up_alive() -> bool:
            assert process.running(), "the sink stopped instead of rejoining"
            return caught_up(run.settings, spec.group_id, ends)

        _wait(caught_up_alive, 300, "the sink to catch up")
    finally:
        process.stop()
    log_text = (tmp_path / "sink.log").read_text()
    assert "a batch's intent was refused: the group moved on; rejoining" in log_text
    target = ClickHouseTarget(spec.target, "retail")
    try:
        _assert_exactly_once(target, sent, events)
    finally:
        target.close()
