"""Garbage never stalls a partition; a foreign Confluent client is processed like ours."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import (
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from topologies.retail.domain import ReceiveSupply, SupplyReceived, retail
from topologies.retail.workload import stock_commands
from typer.testing import CliRunner

from streamfold.cli.app import _mount, app
from streamfold.contracts.avro import avro_schema
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain.naming import aggregate_topics, context_topics
from streamfold.embedded.ports import free_ports
from streamfold.runtime import headers as h
from streamfold.runtime.dead_letters import read_dead_letters
from streamfold.runtime.process import WorkerProcess
from streamfold.runtime.results import RESULT_NAMESPACE, CommandResult
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import read_to_end

from .conftest import RetailRun
from .faulty import Poke, faulty

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if not app.registered_groups:
    _mount()


def results_by_command(run_settings: Any, codec: AvroCodec, topic: str) -> dict[str, list[Any]]:
    reader = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
    found: dict[str, list[Any]] = {}
    for message in read_to_end(run_settings, topic):
        _, record = reader.decode_dict(message.value() or b"")
        found.setdefault(record["command_id"], []).append(record)
    return found


def wait_for(condition: Any, timeout: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)


def test_a_foreign_confluent_client_is_processed_like_ours(retail_run: RetailRun) -> None:
    retail_run.worker("w1")
    topics = retail_run.stock_topics
    client = SchemaRegistryClient({"url": retail_run.registry_url})
    schema = json.dumps(avro_schema(ReceiveSupply, retail.namespace))
    serializer = AvroSerializer(
        client, schema, conf={"subject.name.strategy": topic_record_subject_name_strategy}
    )
    producer = Producer(
        {
            "bootstrap.servers": retail_run.settings.bootstrap_servers,
            "partitioner": "murmur2_random",
        }
    )
    command_id = str(uuid.uuid4())
    value = serializer(
        {"store_id": "s9", "item_id": "i9", "supplier_id": "acme", "quantity": 4},
        SerializationContext(topics.commands, MessageField.VALUE),
    )
    producer.produce(
        topics.commands, value, b"s9/i9", headers=[("command_id", command_id.encode())]
    )
    producer.flush(30)
    wait_for(
        lambda: (
            command_id in results_by_command(retail_run.settings, retail_run.codec, topics.results)
        ),
        what="the foreign command's result",
    )
    (result,) = results_by_command(retail_run.settings, retail_run.codec, topics.results)[
        command_id
    ]
    assert (result["outcome"], result["version"]) == ("accepted", 1)
    events = list(read_to_end(retail_run.settings, topics.events))
    assert len(events) == 1
    deserializer = AvroDeserializer(client)
    event = deserializer(events[0].value(), SerializationContext(topics.events, MessageField.VALUE))
    assert event["supplier_id"] == "acme"
    assert event["quantity"] == 4
    assert h.header_map(events[0].headers())[h.COMMAND_ID] == command_id


def test_garbage_of_every_kind_is_dead_lettered_and_good_commands_flow(
    retail_run: RetailRun, test_scale: float
) -> None:
    retail_run.worker("w1")
    topics = retail_run.stock_topics
    codec = retail_run.codec
    each = scaled(1000, test_scale, 50)
    supply = codec.writer(topics.commands, ReceiveSupply, retail.namespace)
    event_writer = codec.writer(topics.events, SupplyReceived, retail.namespace)
    good_record = supply.encode(
        ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=1)
    )
    garbage: dict[str, list[tuple[bytes, bytes, dict[str, str]]]] = {
        "malformed_bytes": [(b"s/i", b"not avro at all", {}), (b"s/i", b"\x00\x00", {})],
        "unknown_schema_id": [(b"s/i", b"\x00" + (987_654).to_bytes(4, "big") + b"\x02", {})],
        "undecodable_payload": [(b"s/i", good_record + b"\x07trailing", {})],
        "unknown_record_type": [
            (
                b"s/i",
                event_writer.encode(
                    SupplyReceived(
                        store_id="s",
                        item_id="i",
                        supplier_id="x",
                        quantity=1,
                        received_at="2026-01-01T00:00:00Z",
                    )
                ),
                {},
            )
        ],
        "model_invalid": [
            (
                b"s/i",
                supply.encode_dict(
                    {"store_id": "s", "item_id": "i", "supplier_id": "x", "quantity": 0}
                ),
                {},
            )
        ],
        "key_mismatch": [(b"another/key", good_record, {})],
        "invalid_headers": [(b"s/i", good_record, {h.EXPECTED_VERSION: "not-a-number"})],
    }
    sent_good: set[str] = set()
    sent_bad: Counter[str] = Counter()
    commands = iter(stock_commands(200, each * len(garbage), 17))
    for n in range(each):
        for reason, variants in garbage.items():
            key, value, extra = variants[n % len(variants)]
            command_id = str(uuid.uuid4())
            headers = [(h.COMMAND_ID, command_id.encode())]
            headers += [(k, v.encode()) for k, v in extra.items()]
            retail_run.producer.send_raw(topics.commands, key, value, headers)
            sent_bad[reason] += 1
            sent_good.add(retail_run.producer.send(next(commands)))
    retail_run.producer.flush()
    dlq = context_topics("retail", retail_run.prefix).dlq

    def all_dead_lettered() -> bool:
        return len(read_dead_letters(retail_run.settings, dlq)) >= sum(sent_bad.values())

    wait_for(all_dead_lettered, what="the dead letters")
    letters = read_dead_letters(retail_run.settings, dlq)
    assert Counter(letter.reason for letter in letters) == sent_bad
    assert all(letter.source_topic == topics.commands for letter in letters)
    assert all(letter.error for letter in letters)
    # Every good command was processed, garbage in between notwithstanding.
    results = results_by_command(retail_run.settings, codec, topics.results)
    assert sent_good <= results.keys()
    outcomes = Counter(r[0]["outcome"] for r in results.values())
    assert outcomes["invalid"] == sum(sent_bad.values())
    # A fixed record replayed from the dead-letter topic is processed.
    broken = next(letter for letter in letters if letter.reason == "model_invalid")
    fixed = Path(retail_run.directory / "fixed.bin")
    fixed.write_bytes(
        supply.encode_dict({"store_id": "s", "item_id": "i", "supplier_id": "x", "quantity": 3})
    )
    outcome = CliRunner().invoke(
        app,
        [
            "dlq",
            "replay",
            "--topic",
            dlq,
            f"{broken.partition}:{broken.offset}",
            "--value-file",
            str(fixed),
            "--bootstrap",
            retail_run.settings.bootstrap_servers,
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    command_id = h.header_map(broken.headers)[h.COMMAND_ID]

    def replay_accepted() -> bool:
        answers = results_by_command(retail_run.settings, codec, topics.results)[command_id]
        return any(a["outcome"] == "accepted" for a in answers)

    wait_for(replay_accepted, what="the replayed command's result")


def test_a_handler_that_keeps_failing_is_dead_lettered(
    kafka_settings: Any, schema_registry: Any, tmp_path: Path, test_scale: float
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "name: faulty\ncontext: tests.integration.runtime.faulty:faulty\n"
        "topics:\n  partitions: 2\n",
        encoding="utf-8",
    )
    (port,) = free_ports(1)
    worker = WorkerProcess(
        topology,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        registry_url=schema_registry.url,
        instance_id="f1",
        state_dir=tmp_path / "state",
        health_port=port,
        log_file=tmp_path / "worker.log",
        extra_env={"STREAMFOLD_WORKER_TOPIC_PREFIX": prefix},
    )
    worker.start(timeout=120)
    try:
        codec = AvroCodec(ConfluentSchemaRegistry.from_url(schema_registry.url))
        producer = CommandProducer(kafka_settings, codec, faulty, topic_prefix=prefix)
        count = scaled(1000, test_scale, 50)
        good = {producer.send(Poke(widget_id=f"w{n % 10}")) for n in range(count)}
        bad = {producer.send(Poke(widget_id=f"w{n % 10}", explode=True)) for n in range(count)}
        producer.flush()
        dlq = context_topics("faulty", prefix).dlq
        wait_for(lambda: len(read_dead_letters(kafka_settings, dlq)) >= count, what="dlq")
        letters = read_dead_letters(kafka_settings, dlq)
        assert {letter.reason for letter in letters} == {"handler_error"}
        assert {letter.attempts for letter in letters} == {3}  # the first try and 2 retries
        assert all("exploded" in (letter.error or "") for letter in letters)
        assert {h.header_map(letter.headers)[h.COMMAND_ID] for letter in letters} == bad
        topics = aggregate_topics("faulty", "widget", prefix)

        def all_answered() -> bool:
            return len(results_by_command(kafka_settings, codec, topics.results)) >= 2 * count

        wait_for(all_answered, what="results")
        results = results_by_command(kafka_settings, codec, topics.results)
        assert {r[0]["outcome"] for k, r in results.items() if k in good} == {"accepted"}
        assert Decimal(len(good)) == len([k for k in results if k in good])
        producer.close()
    finally:
        worker.stop()
