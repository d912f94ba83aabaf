"""A Faust application on streamfold's topics, on the real broker, beside a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from topologies.retail.domain import ReceiveSupply, RecordSale, retail

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.naming import aggregate_topics
from streamfold.embedded.ports import free_ports
from streamfold.runtime.process import WorkerProcess
from streamfold.transport.commands import CommandProducer
from streamfold.transport.partitioning import partition_for
from streamfold.transport.reading import read_to_end
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOPOLOGY = ROOT / "topologies" / "retail" / "topology.yaml"
LISTENER = Path(__file__).with_name("faust_listener.py")


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_a_faust_agent_gets_typed_events_and_its_command_is_processed(
    kafka_settings: KafkaSettings, schema_registry: Any, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    avro = AvroCodec(ConfluentSchemaRegistry.from_url(schema_registry.url))
    (port,) = free_ports(1)
    worker = WorkerProcess(
        TOPOLOGY,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        registry_url=schema_registry.url,
        instance_id="w1",
        state_dir=tmp_path / "state",
        health_port=port,
        log_file=tmp_path / "worker.log",
        extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": prefix},
    )
    worker.start(timeout=120)
    producer = CommandProducer(kafka_settings, avro, retail, topic_prefix=prefix)
    producer.send(ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=5))
    producer.send(
        RecordSale(
            store_id="s1", item_id="apple", sale_id="r-1", quantity=2, unit_price=Decimal("0.40")
        )
    )
    producer.flush()
    out = tmp_path / "events.jsonl"
    command_id = str(uuid.uuid4())
    listener = subprocess.Popen(
        [sys.executable, str(LISTENER), "worker"],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "APP_ID": f"{prefix}faust-listener",
            "BOOTSTRAP": kafka_settings.bootstrap_servers,
            "REGISTRY_URL": schema_registry.url,
            "PREFIX": prefix,
            "DATADIR": str(tmp_path / "faust"),
            "OUT": str(out),
            "COMMAND_ID": command_id,
        },
        stdout=(tmp_path / "faust.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_lines(out)) < 3 and time.monotonic() < deadline:
            assert listener.poll() is None, (tmp_path / "faust.log").read_text()
            time.sleep(0.5)
    finally:
        listener.terminate()
        listener.wait(30)
        worker.stop()
        producer.close()
    received = {(line["key"], line["type"]): line for line in _lines(out)}
    assert set(received) == {
        ("s1/apple", "SupplyReceived"),
        ("s1/apple", "SaleRecorded"),
        ("faust/from-faust", "SupplyReceived"),
    }, (tmp_path / "faust.log").read_text()
    assert all(line["is_event"] for line in received.values())
    sale = received[("s1/apple", "SaleRecorded")]["fields"]
    assert (sale["quantity"], sale["amount"]) == (2, "0.80")
    assert received[("faust/from-faust", "SupplyReceived")]["fields"]["quantity"] == 7

    # The command Faust sent: on the aggregate's murmur2 partition, with its headers, and
    # accepted by the worker (the event above is its effect).
    topics = aggregate_topics("retail", "store_stock", prefix)
    (sent,) = [
        m for m in read_to_end(kafka_settings, topics.commands) if m.key() == b"faust/from-faust"
    ]
    assert sent.partition() == partition_for(b"faust/from-faust", 6)
    headers = dict(sent.headers() or [])
    assert headers["command_id"] == command_id.encode()
    assert headers["tenant"] == b"t-faust"
    reader = avro.reader(CommandResult, namespace=RESULT_NAMESPACE)
    results = [
        reader.decode_as(m.value() or b"", CommandResult)
        for m in read_to_end(kafka_settings, topics.results)
        if m.key() == command_id.encode()
    ]
    assert [(r.outcome, r.version, r.event_types) for r in results] == [
        ("accepted", 1, ["SupplyReceived"])
    ]
