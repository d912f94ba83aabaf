"""The SDK (``Client``, ``AsyncClient``) and ``streamfold send`` against a real retail stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from topologies.retail.domain import (
    ReceiveSupply,
    RecordSale,
    RegisterSupplier,
    StoreStock,
    Supplier,
    retail,
)

from streamfold.client import (
    AggregateState,
    AsyncClient,
    Client,
    CommandInvalid,
    CommandPending,
    CommandRejected,
    CommandStatus,
    NotFound,
    QueryResult,
)

from .conftest import RetailStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
STREAMFOLD = Path(sys.executable).parent / "streamfold"


def fresh(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(stack: RetailStack) -> Iterator[Client]:
    with Client(stack.url, context=retail) as client:
        yield client


def supply(store: str, item: str, quantity: int) -> ReceiveSupply:
    return ReceiveSupply(store_id=store, item_id=item, supplier_id="sup-1", quantity=quantity)


def sold(store: str, item: str, quantity: int, price: str = "2.50") -> RecordSale:
    return RecordSale(
        store_id=store,
        item_id=item,
        sale_id=fresh("sale"),
        quantity=quantity,
        unit_price=Decimal(price),
    )


def rows_of(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def rows_until(
    fetch: Callable[[], QueryResult],
    done: Callable[[QueryResult], bool],
    timeout_s: float = 30.0,
) -> QueryResult:
    """``fetch()`` until ``done`` says so (or the time is up: the last answer).

    PROJECTED means the state and result rows are in ClickHouse; the events tables the
    reports read may follow a moment later (``Stage.PROJECTED``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


# ---------------------------------------------------------------------- Client


def test_send_answers_the_command_status(client: Client) -> None:
    supplier = fresh("sup")
    status = client.send(RegisterSupplier(supplier_id=supplier, name="Acme"))
    assert isinstance(status, CommandStatus)
    assert status.outcome == "accepted"
    assert status.stage == "processed"
    assert status.version == 1
    assert status.aggregate_id == supplier
    assert status.event_types == ["SupplierRegistered"]


def test_a_rejection_raises_command_rejected_with_code_and_version(client: Client) -> None:
    store, item = fresh("store"), fresh("item")
    client.send(supply(store, item, 2))
    with pytest.raises(CommandRejected) as caught:
        client.send(sold(store, item, 9))
    assert caught.value.code == "insufficient_stock"
    assert caught.value.current_version == 1
    assert caught.value.command_id
    assert "2 on hand" in caught.value.message


def test_an_expected_version_conflict_raises_command_rejected(client: Client) -> None:
    store, item = fresh("store"), fresh("item")
    client.send(supply(store, item, 2))
    with pytest.raises(CommandRejected) as caught:
        client.send(supply(store, item, 1), expected_version=0)
    assert caught.value.code == "version_conflict"
    assert caught.value.current_version == 1


def test_an_invalid_command_raises_command_invalid_naming_the_field(client: Client) -> None:
    # Built without validation, as a client of an older model might send it.
    bad = ReceiveSupply.model_construct(store_id="s", item_id="i", supplier_id="p", quantity=0)
    with pytest.raises(CommandInvalid) as caught:
        client.send(bad)
    errors = caught.value.problem.errors
    assert errors is not None
    assert [e.loc for e in errors] == [["body", "quantity"]]


def test_send_json_of_a_command_without_a_field_raises_command_invalid(client: Client) -> None:
    with pytest.raises(CommandInvalid) as caught:
        client.send_json("retail", "RegisterSupplier", {"supplier_id": fresh("sup")})
    assert caught.value.problem.errors is not None
    assert ["body", "name"] in [e.loc for e in caught.value.problem.errors]


def test_a_zero_timeout_raises_pending_and_wait_completes_it(client: Client) -> None:
    supplier = fresh("sup")
    with pytest.raises(CommandPending) as caught:
        client.send(RegisterSupplier(supplier_id=supplier, name="Acme"), timeout=0)
    pending = caught.value.status
    assert pending.stage == "sent"
    assert pending.outcome is None
    status = client.wait(pending.command_id, wait="processed", timeout=20)
    assert status.command_id == pending.command_id
    assert status.outcome == "accepted"
    assert status.aggregate_id == supplier
    projected = client.wait(pending.command_id, wait="projected", timeout=20)
    assert projected.stage == "projected"
    assert client.status(pending.command_id).stage == "projected"


def test_state_is_the_typed_state_model(client: Client) -> None:
    supplier = fresh("sup")
    status = client.send(RegisterSupplier(supplier_id=supplier, name="Acme"), wait="projected")
    state = client.state("supplier", supplier, min_version=status.version)
    assert isinstance(state, AggregateState)
    assert isinstance(state.state, Supplier)
    assert state.state == Supplier(supplier_id=supplier, name="Acme")
    assert state.version == 1
    assert state.aggregate_id == supplier
    with pytest.raises(CommandRejected) as behind:
        client.state("supplier", supplier, min_version=2)
    assert behind.value.code == "projection_behind"
    assert behind.value.current_version == 1
    with pytest.raises(NotFound):
        client.state("supplier", fresh("nobody"))


def test_state_of_an_id_with_a_slash(client: Client) -> None:
    store, item = fresh("store"), fresh("item")
    client.send(supply(store, item, 6))
    status = client.send(sold(store, item, 2), wait="projected")
    state = client.state("store_stock", f"{store}/{item}", min_version=status.version)
    assert isinstance(state.state, StoreStock)
    assert state.state.on_hand == 4
    assert state.state.sold_amount == Decimal("5.00")
    assert state.version == 2
    first = client.state("store_stock", f"{store}/{item}", version=1)
    assert first.state.on_hand == 6


def test_low_stock_lists_the_items_under_the_threshold(client: Client) -> None:
    store = fresh("store")
    client.send(supply(store, "low", 2), wait="projected")
    client.send(supply(store, "plenty", 50), wait="projected")
    rows = [r for r in rows_of(client.query("low_stock", threshold=3)) if r["store_id"] == store]
    assert [(r["item_id"], r["on_hand"]) for r in rows] == [("low", 2)]
    stricter = client.query("low_stock", threshold=2)
    assert [r for r in rows_of(stricter) if r["store_id"] == store] == []


def test_store_daily_sales_sum_what_was_sold(client: Client) -> None:
    store = fresh("store")
    client.send(supply(store, "a", 10))
    client.send(supply(store, "b", 10))
    client.send(sold(store, "a", 1, "2.50"), wait="projected")
    client.send(sold(store, "b", 3, "1.20"), wait="projected")
    with pytest.raises(CommandRejected):  # a refused sale is no sale
        client.send(sold(store, "a", 99))
    result = rows_until(
        lambda: client.query("store_daily_sales", store_id=store),
        lambda r: bool(r.rows) and int(rows_of(r)[0]["sales"]) == 2,
    )
    assert result.columns == ["day", "store_id", "sales", "units", "amount"]
    rows = rows_of(result)
    today = datetime.now(UTC).date().isoformat()
    assert len(rows) == 1
    assert str(rows[0]["day"]) == today
    assert rows[0]["store_id"] == store
    assert int(rows[0]["sales"]) == 2
    assert int(rows[0]["units"]) == 4
    assert Decimal(str(rows[0]["amount"])) == Decimal("6.10")
    assert result.truncated is False


# ---------------------------------------------------------------------- AsyncClient


def test_the_async_client_sends_waits_and_reads(stack: RetailStack) -> None:
    async def scenario() -> None:
        async with AsyncClient(stack.url, context=retail) as client:
            store = fresh("store")
            items = [f"item-{n}" for n in range(5)]
            statuses = await asyncio.gather(*(client.send(supply(store, i, 3)) for i in items))
            assert [s.outcome for s in statuses] == ["accepted"] * 5
            assert {s.aggregate_id for s in statuses} == {f"{store}/{i}" for i in items}

            with pytest.raises(CommandRejected) as caught:
                await client.send(sold(store, items[0], 4))
            assert caught.value.code == "insufficient_stock"
            assert caught.value.current_version == 1

            with pytest.raises(CommandPending) as pending:
                await client.send(sold(store, items[0], 1), timeout=0)
            done = await client.wait(pending.value.status.command_id, wait="projected", timeout=20)
            assert done.outcome == "accepted"
            assert done.version == 2

            state = await client.state("store_stock", f"{store}/{items[0]}", min_version=2)
            assert isinstance(state.state, StoreStock)
            assert state.state.on_hand == 2

            low = await client.query("low_stock", threshold=3)
            mine = sorted(
                (r["item_id"], r["on_hand"]) for r in rows_of(low) if r["store_id"] == store
            )
            assert mine == [(items[0], 2)]

    asyncio.run(scenario())


# ---------------------------------------------------------------------- streamfold send


def streamfold_send(stack: RetailStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMFOLD_GATEWAY_URL": stack.url}
    return subprocess.run(
        [str(STREAMFOLD), "send", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_streamfold_send_prints_the_outcome_and_exits_zero(stack: RetailStack) -> None:
    supplier = fresh("sup")
    body = json.dumps({"supplier_id": supplier, "name": "Acme"})
    done = streamfold_send(stack, "retail.RegisterSupplier", body, "--wait", "processed")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["outcome"] == "accepted"
    assert printed["stage"] == "processed"
    assert printed["aggregate_id"] == supplier
    assert printed["version"] == 1


def test_streamfold_send_prints_the_problem_and_exits_two_on_a_rejection(
    stack: RetailStack,
) -> None:
    body = json.dumps({"supplier_id": fresh("sup"), "name": "Acme"})
    first = streamfold_send(stack, "retail.RegisterSupplier", body, "--wait", "processed")
    assert first.returncode == 0, first.stderr
    again = streamfold_send(stack, "retail.RegisterSupplier", body, "--wait", "processed")
    assert again.returncode == 2, (again.stdout, again.stderr)
    problem = json.loads(again.stdout)
    assert isinstance(problem, dict), problem
    assert problem["status"] == 409
    assert problem["code"] == "already_exists"
    assert problem["current_version"] == 1
