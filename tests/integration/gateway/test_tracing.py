"""A trace starts at the HTTP request and follows the command into the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.integration.gateway.traced_run import CALLER_SPAN, CALLER_TRACE

from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def test_the_decide_span_is_a_child_of_the_gateways_and_the_events_carry_it_on(
    kafka_settings: KafkaSettings, schema_registry: Any, tmp_path: Path
) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.gateway.traced_run",
            kafka_settings.bootstrap_servers,
            schema_registry.url,
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    spans = {span["span_id"]: span for span in found["spans"]}
    (decide,) = [s for s in spans.values() if s["name"] == "decide retail.supplier"]
    send = spans[decide["parent_id"]]
    assert send["name"] == "send retail.RegisterSupplier"
    # up from the gateway's send span: the request's server span, then the caller's span
    chain = [send]
    while chain[-1]["parent_id"] in spans:
        chain.append(spans[chain[-1]["parent_id"]])
    assert chain[-1]["name"] == "POST /retail/supplier/register_supplier"
    assert chain[-1]["parent_id"] == CALLER_SPAN
    assert {s["trace_id"] for s in [decide, *chain]} == {CALLER_TRACE}
    # the command carries the send span; what the command caused carries the decide span
    assert found["command"] == f"00-{CALLER_TRACE}-{send['span_id']}-01"
    assert found["event"] == f"00-{CALLER_TRACE}-{decide['span_id']}-01"
