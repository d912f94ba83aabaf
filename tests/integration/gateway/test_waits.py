"""Waits at scale: 1,000 at once, through a worker SIGKILL, across replicas, and none leaked."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tests.integration.gateway.conftest import RetailStack
from topologies.retail.domain import ReceiveSupply, retail

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.contracts.results import TENANT_MISMATCH
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.commands import CommandProducer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUPPLY = "/retail/store_stock/receive_supply"
SALE = "/retail/store_stock/record_sale"


def metric(stack: RetailStack, name: str, gateway: int = 0) -> float:
    text = httpx.get(f"{stack.gateways[gateway].url}/metrics", timeout=10).text
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] == name
    )


def traffic(n: int, tag: str) -> list[tuple[str, dict[str, Any], int, str | None]]:
    """``n`` commands on fresh aggregates: supplies (accepted, version 1) and sales of stock
    that is not there (rejected, ``not_found``); (path, body, status, code) each."""
    rng = random.Random(tag)
    made = []
    for i in range(n):
        store, item = f"{tag}-s{i % 50}", f"i{i}"
        if rng.random() < 0.8:
            body = {"store_id": store, "item_id": item, "supplier_id": "x", "quantity": 3}
            made.append((SUPPLY, body, 200, None))
        else:
            body = {
                "store_id": store,
                "item_id": item,
                "sale_id": f"{i}",
                "quantity": 1,
                "unit_price": "1.00",
            }
            made.append((SALE, body, 409, "not_found"))
    return made


async def post_all(
    url: str, commands: list[tuple[str, dict[str, Any], int, str | None]], wait_ms: int
) -> list[tuple[str, httpx.Response]]:
    limits = httpx.Limits(max_connections=len(commands), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=wait_ms / 1000 + 60) as http:

        async def one(path: str, body: dict[str, Any]) -> tuple[str, httpx.Response]:
            command_id = str(uuid.uuid4())
            headers = {"Command-Id": command_id, "Wait-Timeout-Ms": str(wait_ms)}
            return command_id, await http.post(path, json=body, headers=headers)

        return await asyncio.gather(*(one(path, body) for path, body, _s, _c in commands))


def assert_outcome(
    response: httpx.Response, command: tuple[str, dict[str, Any], int, str | None]
) -> None:
    _path, _body, status, code = command
    assert response.status_code == status, response.text
    body = response.json()
    if status == 200:
        assert (body["outcome"], body["version"]) == ("accepted", 1)
        assert body["stage"] in ("processed", "projected")  # the furthest stage reached
    else:
        assert (body["code"], body["current_version"]) == (code, 0)


def test_a_thousand_concurrent_waits_complete_and_a_worker_sigkill_answers_202_then_get(
    stack: RetailStack,
) -> None:
    commands = traffic(1000, "k1")
    answered = asyncio.run(post_all(stack.url, commands, wait_ms=60_000))
    for (_id, response), command in zip(answered, commands, strict=True):
        assert_outcome(response, command)
    assert metric(stack, "streamfold_gateway_open_waits") == 0

    # The worker dies while 1,000 waits are open: each is answered when its time is up.
    second = traffic(1000, "k2")

    async def during_a_kill() -> list[tuple[str, httpx.Response]]:
        sending = asyncio.ensure_future(post_all(stack.url, second, wait_ms=6_000))
        await asyncio.sleep(0.3)
        stack.worker.kill()
        return await sending

    answered = asyncio.run(during_a_kill())
    pending = [(cid, r) for cid, r in answered if r.status_code == 202]
    done = [
        (cid, r, c) for (cid, r), c in zip(answered, second, strict=True) if r.status_code != 202
    ]
    assert len(pending) >= 100, "the kill came too late: nearly every command was processed"
    for command_id, response in pending:
        assert response.headers["Location"] == f"/commands/{command_id}"
        assert response.json()["stage"] == "sent"
    for _cid, response, command in done:
        assert_outcome(response, command)

    stack.worker.start(timeout=180)
    expected = {cid: c for (cid, _r), c in zip(answered, second, strict=True)}
    with stack.client() as http:
        for command_id, _response in pending:
            found = http.get(
                f"/commands/{command_id}",
                headers={"Wait-Stage": "processed", "Wait-Timeout-Ms": "60000"},
            )
            assert found.status_code == 200, found.text
            _path, _body, status, code = expected[command_id]
            body = found.json()
            assert body["outcome"] == ("accepted" if status == 200 else "rejected")
            assert body["code"] == code
    assert metric(stack, "streamfold_gateway_open_waits") == 0


def test_a_second_replica_answers_for_commands_the_first_sent(stack: RetailStack) -> None:
    with stack.client() as first:
        early = first.post(
            SUPPLY,
            json={"store_id": "r0", "item_id": "i0", "supplier_id": "x", "quantity": 1},
        )
        assert early.status_code == 200
    # Started after the command was processed: it reads the outcomes of the lookback.
    other = stack.gateway()
    with stack.client(other) as second, stack.client() as first:
        seen = second.get(f"/commands/{early.json()['command_id']}")
        assert (seen.status_code, seen.json()["outcome"]) == (200, "accepted")
        for i in range(20):
            body = {"store_id": "r1", "item_id": f"i{i}", "supplier_id": "x", "quantity": 2}
            sent = first.post(SUPPLY, json=body, headers={"Wait-Stage": "sent"})
            assert (sent.status_code, sent.json()["stage"]) == (200, "sent")
            waited = second.get(
                f"/commands/{sent.json()['command_id']}",
                headers={"Wait-Stage": "projected", "Wait-Timeout-Ms": "30000"},
            )
            assert waited.status_code == 200, waited.text
            assert (waited.json()["stage"], waited.json()["version"]) == ("projected", 1)
        # and the other way round, with the state read through the second replica
        sent = second.post(
            SUPPLY,
            json={"store_id": "r2", "item_id": "i", "supplier_id": "x", "quantity": 7},
            headers={"Wait-Stage": "projected"},
        )
        assert sent.status_code == 200
        state = first.get("/retail/store_stock/r2%2Fi/state", params={"min_version": 1})
        assert (state.status_code, state.json()["state"]["on_hand"]) == (200, 7)


async def wait_then_leave(url: str, path: str, seconds: float) -> None:
    """Ask for ``path`` with a long wait, check nothing comes back for ``seconds``, hang up."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nWait-Stage: processed\r\n"
        "Wait-Timeout-Ms: 60000\r\n\r\n".encode()
    )
    await writer.drain()
    with pytest.raises(TimeoutError):  # the wait is open: no answer yet
        await asyncio.wait_for(reader.read(1), seconds)
    writer.close()
    await writer.wait_closed()


def test_no_wait_outlives_its_request_after_thousands_with_disconnects(
    stack: RetailStack, test_scale: float
) -> None:
    """Every third request waits for an outcome that never comes (a command id nobody sent)
    and its client hangs up after a second; the others send a command and wait for it."""
    total = scaled(10_000, test_scale, minimum=1000)
    abandoned_before = metric(stack, "streamfold_gateway_abandoned_waits_total")
    left = 0

    async def run() -> None:
        nonlocal left
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        gate = asyncio.Semaphore(200)
        async with httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=60) as http:

            async def one(i: int) -> None:
                nonlocal left
                async with gate:
                    if i % 3:
                        body = {
                            "store_id": "leak",
                            "item_id": f"i{i}",
                            "supplier_id": "x",
                            "quantity": 1,
                        }
                        assert (await http.post(SUPPLY, json=body)).status_code == 200
                        return
                    await wait_then_leave(stack.url, f"/commands/{uuid.uuid4()}", 1.0)
                    left += 1

            await asyncio.gather(*(one(i) for i in range(total)))

    asyncio.run(run())
    deadline = time.monotonic() + 30
    while metric(stack, "streamfold_gateway_open_waits") != 0:
        assert time.monotonic() < deadline, "waits are still open"
        time.sleep(0.2)
    abandoned = metric(stack, "streamfold_gateway_abandoned_waits_total") - abandoned_before
    assert left == len(range(0, total, 3))
    # Each of them had been waiting a second when its client left: the gateway saw it go
    # (not the 60 s timeout) and released its wait.
    assert abandoned == left, (abandoned, left)


def test_the_worker_refuses_another_tenants_command_sent_straight_to_kafka(
    stack: RetailStack,
) -> None:
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(stack.registry_url))
    producer = CommandProducer(stack.settings, codec, retail, topic_prefix=stack.prefix)
    try:
        supply = ReceiveSupply(store_id="t", item_id="i", supplier_id="x", quantity=1)
        mine = producer.send(supply, tenant="tenant-a")
        theirs = producer.send(supply, tenant="tenant-b")
        untenanted = producer.send(supply)
        producer.flush()
    finally:
        producer.close()
    wait = {"Wait-Stage": "processed", "Wait-Timeout-Ms": "30000"}
    with stack.client() as http:
        first = http.get(f"/commands/{mine}", headers=wait).json()
        assert (first["outcome"], first["version"]) == ("accepted", 1)
        for command_id in (theirs, untenanted):
            refused = http.get(f"/commands/{command_id}", headers=wait).json()
            assert (refused["outcome"], refused["code"], refused["version"]) == (
                "rejected",
                TENANT_MISMATCH,
                0,
            )
        # through the gateway, the worker's refusal is a 403
        body = {"store_id": "t", "item_id": "i", "supplier_id": "x", "quantity": 1}
        answer = http.post(SUPPLY, json=body, headers={"Tenant": "tenant-b"})
        assert (answer.status_code, answer.json()["code"]) == (403, TENANT_MISMATCH)
