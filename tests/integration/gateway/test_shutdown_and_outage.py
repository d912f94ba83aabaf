"""A gateway stop answers its open waits; with Kafka unreachable a send is a 503."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from tests.integration.gateway.conftest import CONNECTOR, TOPOLOGY, RetailStack

from streamfold.embedded.ports import free_ports
from streamfold.gateway.server import GatewayProcess

pytestmark = pytest.mark.integration

SUPPLY = "/retail/store_stock/receive_supply"


def test_a_stop_answers_every_open_wait_with_202_before_its_time_is_up(
    stack: RetailStack,
) -> None:
    gateway = stack.gateway()
    answers: list[httpx.Response] = []

    def wait_long(i: int) -> None:
        body = {"store_id": "stop", "item_id": f"i{i}", "supplier_id": "x", "quantity": 1}
        with httpx.Client(base_url=gateway.url, timeout=120) as http:
            answers.append(http.post(SUPPLY, json=body, headers={"Wait-Timeout-Ms": "60000"}))

    stack.worker.pause()  # nothing is processed: every wait stays open
    try:
        threads = [threading.Thread(target=wait_long, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while _open_waits(gateway) < 20:
            assert time.monotonic() < deadline, "the waits did not all open"
            time.sleep(0.1)
        stopped = time.monotonic()
        # uvicorn shuts down, then re-raises the SIGTERM it caught: -15, not a SIGKILL's -9
        assert gateway.stop() in (0, -signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        took = time.monotonic() - stopped
    finally:
        stack.worker.resume()
    assert len(answers) == 20
    for answer in answers:
        assert answer.status_code == 202, answer.text
        assert answer.headers["Location"] == f"/commands/{answer.json()['command_id']}"
    assert took < 10, f"the stop took {took:.1f} s: the waits were not answered at once"


def _open_waits(gateway: GatewayProcess) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    (line,) = [x for x in text.splitlines() if x.startswith("streamfold_gateway_open_waits ")]
    return float(line.split()[1])


def test_with_kafka_unreachable_a_command_is_a_503_and_the_gateway_is_not_ready(
    stack: RetailStack, tmp_path: Path
) -> None:
    dead, port = free_ports(2)  # nothing listens on ``dead``
    gateway = GatewayProcess(
        TOPOLOGY,
        bootstrap_servers=f"127.0.0.1:{dead}",
        registry_url=stack.registry_url,
        port=port,
        connectors_dir=CONNECTOR,
        clickhouse_target=stack.target,
        log_file=tmp_path / "gateway.log",
        extra_env={"STREAMFOLD_GATEWAY_SEND_TIMEOUT_MS": "3000"},
    )
    gateway.spawn()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert gateway.running(), (tmp_path / "gateway.log").read_text()[-2000:]
            try:
                if httpx.get(f"{gateway.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway never served"
            time.sleep(0.2)
        assert httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 503
        body = {"store_id": "down", "item_id": "i", "supplier_id": "x", "quantity": 1}
        command_id = str(uuid.uuid4())
        started = time.monotonic()
        answer = httpx.post(
            f"{gateway.url}{SUPPLY}",
            json=body,
            headers={"Command-Id": command_id, "Wait-Timeout-Ms": "30000"},
            timeout=60,
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert (problem["type"], problem["command_id"]) == (
            "urn:streamfold:problem:unavailable",
            command_id,
        )
        assert int(answer.headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 20  # the send timeout, not the wait's 30 s
    finally:
        gateway.stop()
