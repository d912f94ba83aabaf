"""The conformance suite every sink target passes: what the sink's loop relies on.

It runs against ClickHouse on chDB, against the in-memory recording target, and against a
ClickHouse server when ``STREAMFOLD_TEST_CLICKHOUSE_URL`` names one (``http(s)://…``, user
``default`` unless the URL says otherwise). A new target is added to ``TARGETS``.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from topologies.retail.domain import retail

from streamfold.sink.ddl import TableSpec, context_tables
from streamfold.sink.recording import RecordingTarget
from streamfold.sink.target import (
    ClickHouseTarget,
    SinkTarget,
    TargetError,
    TargetUnavailableError,
)
from streamfold.sink.types import Column

pytestmark = pytest.mark.integration

RESULTS = next(t for t in context_tables(retail) if t.kind == "command_results")
COMPARED = ("command_id", "aggregate_id", "version", "event_types", "_partition", "_offset")


def _chdb(tmp_path: Path) -> SinkTarget:
    return ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "conformance")


def _recording(tmp_path: Path) -> SinkTarget:
    return RecordingTarget("conformance")


def _server(tmp_path: Path) -> SinkTarget:
    url = os.environ["STREAMFOLD_TEST_CLICKHOUSE_URL"]
    return ClickHouseTarget(url, f"conformance_{uuid.uuid4().hex[:8]}")


TARGETS: dict[str, Callable[[Path], SinkTarget]] = {"chdb": _chdb, "recording": _recording}
if os.environ.get("STREAMFOLD_TEST_CLICKHOUSE_URL"):
    TARGETS["server"] = _server


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SinkTarget]:
    made = TARGETS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()


def _rows(target: SinkTarget, table: TableSpec) -> list[tuple[Any, ...]]:
    """The compared columns of every row of ``table``, by partition and offset."""
    at = [[c.name for c in table.columns].index(name) for name in COMPARED]
    if isinstance(target, RecordingTarget):
        rows = [tuple(row[i] for i in at) for row in target.rows[table.name]]
    else:
        assert isinstance(target, ClickHouseTarget)
        names = ", ".join(f"`{n}`" for n in COMPARED)
        _c, found = target.query(f"SELECT {names} FROM {table.qualified(target.database)}")
        rows = [tuple(row) for row in found]
    return sorted(
        (tuple(list(v) if isinstance(v, tuple) else v for v in r) for r in rows),
        key=lambda r: (r[4], r[5]),
    )


def _columns(table: TableSpec, offsets: Sequence[int], partition: int = 0) -> list[list[Any]]:
    values: dict[str, Callable[[int], Any]] = {
        "command_id": lambda n: f"c{n}",
        "aggregate_type": lambda n: "store_stock",
        "aggregate_id": lambda n: f"s/i{n}",
        "command_type": lambda n: "RecordSale",
        "outcome": lambda n: "processed",
        "version": lambda n: n + 1,
        "event_types": lambda n: ["SaleRecorded"],
        "duplicate": lambda n: 0,
        "processed_at": lambda n: datetime(2026, 12, 4, 12, 0, n % 60, tzinfo=UTC),
        "_topic": lambda n: "retail.store_stock.results",
        "_partition": lambda n: partition,
        "_offset": lambda n: n,
    }
    return [[values.get(c.name, _blank)(n) for n in offsets] for c in table.columns]


def _blank(n: int) -> str:
    return ""


def _expected(offsets: Sequence[int], partition: int = 0) -> list[tuple[Any, ...]]:
    return [(f"c{n}", f"s/i{n}", n + 1, ["SaleRecorded"], partition, n) for n in offsets]


def test_ensure_creates_the_tables_once(target: SinkTarget) -> None:
    assert target.ensure([RESULTS]) == []
    assert target.ensure([RESULTS]) == []
    assert _rows(target, RESULTS) == []


def test_ensure_adds_the_columns_a_table_has_gained_and_keeps_its_rows(
    target: SinkTarget,
) -> None:
    old = dataclasses.replace(
        RESULTS, columns=tuple(c for c in RESULTS.columns if c.name != "principal")
    )
    target.ensure([old])
    target.insert_columns(old, _columns(old, [0, 1]), "t-old")
    grown = dataclasses.replace(
        RESULTS, columns=(*RESULTS.columns, Column("shelf", "Nullable(String)"))
    )
    assert target.ensure([grown]) == [f"{RESULTS.name}.principal", f"{RESULTS.name}.shelf"]
    target.insert_columns(grown, _columns(grown, [2]), "t-grown")
    assert _rows(target, grown) == _expected([0, 1, 2])


def test_an_insert_lands_whole_and_holds_tells_its_range(target: SinkTarget) -> None:
    target.ensure([RESULTS])
    target.insert_columns(RESULTS, _columns(RESULTS, [10, 11, 12], partition=3), "t1")
    assert _rows(target, RESULTS) == _expected([10, 11, 12], partition=3)
    topic = "retail.store_stock.results"
    assert target.holds(RESULTS, topic, 3, 12, 20)
    assert target.holds(RESULTS, topic, 3, 0, 10)
    assert not target.holds(RESULTS, topic, 3, 13, 20)
    assert not target.holds(RESULTS, topic, 2, 10, 12)  # another partition
    assert not target.holds(RESULTS, "retail.item.results", 3, 10, 12)  # another topic


def test_an_insert_again_under_its_token_is_dropped(target: SinkTarget) -> None:
    """A sink that restarted between an insert and its commit inserts the batch again."""
    target.ensure([RESULTS])
    batch = _columns(RESULTS, [0, 1])
    target.insert_columns(RESULTS, batch, "t1")
    target.insert_columns(RESULTS, batch, "t1")
    assert _rows(target, RESULTS) == _expected([0, 1])
    target.insert_columns(RESULTS, batch, "t2")  # another token: another batch
    assert _rows(target, RESULTS) == sorted(_expected([0, 1]) * 2, key=lambda r: r[5])


def test_an_empty_insert_inserts_nothing(target: SinkTarget) -> None:
    target.ensure([RESULTS])
    target.insert_columns(RESULTS, [[] for _ in RESULTS.columns], "t1")
    target.insert_columns(RESULTS, _columns(RESULTS, [0]), "t1")  # the token is still free
    assert _rows(target, RESULTS) == _expected([0])


def test_an_insert_into_a_table_never_created_is_a_permanent_error(target: SinkTarget) -> None:
    target.ensure([RESULTS])
    missing = dataclasses.replace(RESULTS, name="never_created")
    with pytest.raises(TargetError):
        target.insert_columns(missing, _columns(missing, [0]), "t1")


def test_the_recording_target_decodes_no_avro() -> None:
    """A sink in front of it takes the Python path for every batch (see connector.py)."""
    recording = RecordingTarget()
    assert not recording.decodes_avro
    with pytest.raises(TargetError, match="decodes no Avro"):
        recording.insert_avro(RESULTS, [], "t1")


def test_an_unavailable_recording_target_is_retryable_and_keeps_what_it_had() -> None:
    """For tests of the sink's backoff: every call is unavailable until it is back."""
    recording = RecordingTarget()
    recording.ensure([RESULTS])
    recording.available = False
    with pytest.raises(TargetUnavailableError):
        recording.insert_columns(RESULTS, _columns(RESULTS, [0]), "t1")
    recording.available = True
    recording.insert_columns(RESULTS, _columns(RESULTS, [0]), "t1")  # the token was not spent
    assert _rows(recording, RESULTS) == _expected([0])
