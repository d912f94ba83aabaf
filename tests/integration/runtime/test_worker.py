"""A worker process on the real broker: results, events, state; restarts; idempotency."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from fastavro import parse_schema, schemaless_writer
from topologies.retail.domain import ReceiveSupply, RecordSale, SupplyReceived, retail
from topologies.retail.workload import stock_commands
from typer.testing import CliRunner

from streamfold.cli.app import _mount, app
from streamfold.contracts.avro import avro_schema
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import read_to_end

from .conftest import TOPOLOGY, RetailRun

if not app.registered_groups:
    _mount()

pytestmark = pytest.mark.integration


def test_commands_get_one_result_and_state_is_the_fold(
    retail_run: RetailRun, test_scale: float
) -> None:
    retail_run.worker("w1")
    sent = set()
    for command in stock_commands(aggregates=50, commands=scaled(2000, test_scale, 200)):
        sent.add(retail_run.producer.send(command))
    retail_run.producer.flush()
    retail_run.wait_until_processed(sent)
    report = retail_run.check_stock(sent)
    assert report.outcomes["accepted"] > 0
    assert report.outcomes["rejected"] > 0
    assert report.aggregates == 50


def test_a_repeated_command_id_gets_the_first_result(retail_run: RetailRun) -> None:
    retail_run.worker("w1")
    supply = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=5)
    first = retail_run.producer.send(supply)
    retail_run.producer.send(supply, command_id=first)  # a retry
    sale = RecordSale(store_id="s", item_id="i", sale_id="1", quantity=9, unit_price="1.00")
    rejected = retail_run.producer.send(sale)
    retail_run.producer.send(sale, command_id=rejected)
    retail_run.producer.flush()
    retail_run.wait_until_processed({first, rejected}, resent={first, rejected})
    report = retail_run.check_stock({first, rejected}, resent={first, rejected})
    assert report.duplicates == 2
    assert report.events == 1  # the retried supply had no second effect
    assert report.outcomes == {"accepted": 1, "rejected": 1}


def test_state_get_reads_the_committed_state(retail_run: RetailRun) -> None:
    retail_run.worker("w1")
    supply = ReceiveSupply(store_id="s1", item_id="i1", supplier_id="x", quantity=7)
    sale = RecordSale(store_id="s1", item_id="i1", sale_id="1", quantity=2, unit_price="1.50")
    sent = {retail_run.producer.send(supply), retail_run.producer.send(sale)}
    retail_run.producer.flush()
    retail_run.wait_until_processed(sent)
    common = [
        "--topology",
        str(TOPOLOGY),
        "--prefix",
        retail_run.prefix,
        "--bootstrap",
        retail_run.settings.bootstrap_servers,
        "--registry",
        retail_run.registry_url,
    ]
    found = CliRunner().invoke(app, ["state", "get", "store_stock", "s1/i1", *common])
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    assert (answer["version"], answer["deleted"]) == (2, False)
    assert answer["state"] == {
        "store_id": "s1",
        "item_id": "i1",
        "on_hand": 5,
        "sold_amount": "3.00",
        "supplier_id": None,  # no reorder policy
        "reorder_point": 0,
        "reorder_quantity": 0,
        "lead_time_seconds": 0,
    }
    missing = CliRunner().invoke(app, ["state", "get", "store_stock", "nobody/none", *common])
    assert missing.exit_code == 3


def test_commands_stay_in_order_through_a_registry_outage(
    retail_run: RetailRun, schema_registry_factory: Any
) -> None:
    """A command whose schema cannot be fetched waits, and so does everything after it."""
    registry = schema_registry_factory()
    retail_run.registry_url = registry.url
    retail_run.codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry.url))
    retail_run.producer = CommandProducer(
        retail_run.settings, retail_run.codec, retail, topic_prefix=retail_run.prefix
    )
    worker = retail_run.worker("w1")
    topic = retail_run.stock_topics.commands
    newer = avro_schema(ReceiveSupply, retail.namespace)
    newer["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    subject = f"{topic}-{retail.namespace}.ReceiveSupply"
    newer_id = registry.client().register_schema(subject, Schema(json.dumps(newer), "AVRO"))
    parsed = parse_schema(newer)
    sent = []
    for quantity in (1, 2):
        supply = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=quantity)
        sent.append(retail_run.producer.send(supply))
    retail_run.producer.flush()
    retail_run.wait_until_processed(set(sent))
    registry.stop()  # the worker has never seen newer_id: it cannot decode 3 until it is back
    worker.pause()  # so that it reads 3, 4 and 5 in one go
    buffer = io.BytesIO()
    buffer.write(b"\x00" + newer_id.to_bytes(4, "big"))
    schemaless_writer(
        buffer,
        parsed,
        {"store_id": "s", "item_id": "i", "supplier_id": "x", "quantity": 3, "note": "new"},
    )
    third = str(uuid.uuid4())
    retail_run.producer.send_raw(topic, b"s/i", buffer.getvalue(), [("command_id", third.encode())])
    sent.append(third)
    for quantity in (4, 5):
        supply = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=quantity)
        sent.append(retail_run.producer.send(supply))
    retail_run.producer.flush()
    time.sleep(1)
    worker.resume()
    time.sleep(5)  # the worker retries meanwhile
    registry.process.start()
    retail_run.wait_until_processed(set(sent))
    reader = retail_run.codec.reader(SupplyReceived, namespace=retail.namespace)
    quantities = [
        reader.decode_as(m.value() or b"", SupplyReceived).quantity
        for m in read_to_end(retail_run.settings, retail_run.stock_topics.events)
    ]
    assert quantities == [1, 2, 3, 4, 5]
    retail_run.producer.close()
