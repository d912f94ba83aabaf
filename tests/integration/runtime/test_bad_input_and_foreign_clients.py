"""Garbage never stalls a partition; a foreign Confluent client is processed like ours."""

from __future__ import annotations

import functools
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
from topologies.retail.domain import (
    AdjustStock,
    ReceiveSupply,
    RecordSale,
    SupplyReceived,
    retail,
    stock,
)
from topologies.retail.workload import stock_commands
from typer.testing import CliRunner

from streamfold.cli.app import _mount, app
from streamfold.contracts import headers as h
from streamfold.contracts.avro import avro_schema
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.naming import context_topics
from streamfold.runtime.dead_letters import read_dead_letters
from streamfold.testing.invariants import check_aggregate
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.partitioning import partition_for
from streamfold.transport.reading import read_to_end

from .conftest import FaultyRun, RetailRun, results_by_command
from .faulty import Poke, faulty, widgets

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if not app.registered_groups:
    _mount()


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
    faulty_run: FaultyRun, test_scale: float
) -> None:
    producer, kafka_settings = faulty_run.producer, faulty_run.settings
    count = scaled(1000, test_scale, 50)
    good = {producer.send(Poke(widget_id=f"w{n % 10}")) for n in range(count)}
    bad = {producer.send(Poke(widget_id=f"w{n % 10}", explode=True)) for n in range(count)}
    producer.flush()
    dlq = faulty_run.dlq
    wait_for(lambda: len(read_dead_letters(kafka_settings, dlq)) >= count, what="dlq")
    letters = read_dead_letters(kafka_settings, dlq)
    assert {letter.reason for letter in letters} == {"handler_error"}
    assert {letter.attempts for letter in letters} == {3}  # the first try and 2 retries
    assert all("exploded" in (letter.error or "") for letter in letters)
    assert {h.header_map(letter.headers)[h.COMMAND_ID] for letter in letters} == bad
    wait_for(lambda: len(faulty_run.results()) >= 2 * count, what="results")
    results = faulty_run.results()
    assert {r[0]["outcome"] for k, r in results.items() if k in good} == {"accepted"}
    assert Decimal(len(good)) == len([k for k in results if k in good])


def test_keyless_and_misplaced_commands_are_processed_once_on_their_partition(
    retail_run: RetailRun, test_scale: float
) -> None:
    """Keyless, default-partitioner and explicit wrong-partition commands (with and
    without a command id) are decided on their aggregate's partition, and answered there."""
    retail_run.worker("w1")
    topics = retail_run.stock_topics
    producer = Producer({"bootstrap.servers": retail_run.settings.bootstrap_servers})
    landed: dict[str, tuple[int, int]] = {}  # a command's tag -> where it landed

    def delivered(tag: str, err: Any, message: Any) -> None:
        assert err is None, err
        landed[tag] = (message.partition(), message.offset())

    writers = {
        kind: retail_run.codec.writer(topics.commands, kind, retail.namespace)
        for kind in (ReceiveSupply, RecordSale, AdjustStock)
    }
    sent: set[str] = set()
    anonymous: list[str] = []  # tags of keyless commands without a command id
    homes: dict[str, int] = {}  # tag -> the partition of the command's aggregate
    count = scaled(600, test_scale, 120)
    for n, command in enumerate(stock_commands(12, count, 31)):
        key = stock.aggregate_id(command)
        value = writers[type(command)].encode(command)  # type: ignore[index]
        tag = str(uuid.uuid4())
        headers = [("test.tag", tag.encode())]
        if n % 4 == 3:
            anonymous.append(tag)
        else:
            headers.append((h.COMMAND_ID, tag.encode()))
            sent.add(tag)
        home = homes[tag] = partition_for(key, 6)
        report = functools.partial(delivered, tag)  # a delivery report carries no headers
        if n % 4 == 0:
            producer.produce(topics.commands, value, None, headers=headers, on_delivery=report)
        elif n % 4 == 1:
            wrong = (home + 1 + n % 5) % 6
            producer.produce(
                topics.commands, value, key, partition=wrong, headers=headers, on_delivery=report
            )
        elif n % 4 == 2:  # librdkafka's default partitioner: CRC32 of the key
            producer.produce(topics.commands, value, key, headers=headers, on_delivery=report)
        else:
            producer.produce(topics.commands, value, None, headers=headers, on_delivery=report)
    assert producer.flush(30) == 0
    for tag in anonymous:  # a command without an id gets the one derived from where it landed
        sent.add(h.derived_command_id(topics.commands, *landed[tag]))
    retail_run.wait_until_processed(sent)
    report = retail_run.check_stock(sent)
    assert report.results == len(sent)  # no result where a command landed, one where processed
    reader = retail_run.codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
    for message in read_to_end(retail_run.settings, topics.results):
        _, result = reader.decode_dict(message.value() or b"")
        assert message.partition() == partition_for(result["aggregate_id"], 6), result
    forwarded = [
        m
        for m in read_to_end(retail_run.settings, topics.commands)
        if h.FORWARDED_FROM in h.header_map(m.headers())
    ]
    misplaced = sum(1 for tag, (partition, _offset) in landed.items() if partition != homes[tag])
    assert len(forwarded) == misplaced > count // 4
    for message in forwarded:
        assert message.key() is not None
        assert message.partition() == partition_for(message.key() or b"", 6)
        source, partition, _offset = h.header_map(message.headers())[h.FORWARDED_FROM].split("/")
        assert (source, int(partition) != message.partition()) == (topics.commands, True)


def test_a_state_too_large_to_produce_is_dead_lettered_whole(faulty_run: FaultyRun) -> None:
    """A command whose state record exceeds the record size limit is dead-lettered with
    that reason; none of its records is committed, and its aggregate goes on after it."""
    producer = faulty_run.producer
    first = producer.send(Poke(widget_id="big", grow=600_000))
    others = {producer.send(Poke(widget_id=f"small-{n}")) for n in range(20)}
    too_large = producer.send(Poke(widget_id="big", grow=600_000))  # state: 1.2 MB
    others |= {producer.send(Poke(widget_id=f"small-{n}")) for n in range(20)}
    after = producer.send(Poke(widget_id="big"))
    producer.flush()
    sent = {first, too_large, after} | others
    wait_for(lambda: sent <= faulty_run.results().keys(), 120, "every result")
    assert faulty_run.worker.running()
    results = faulty_run.results()
    assert all(len(answers) == 1 for answers in results.values())
    assert results[too_large][0]["outcome"] == "invalid"
    assert results[too_large][0]["code"] == "record_too_large"
    assert (results[after][0]["outcome"], results[after][0]["version"]) == ("accepted", 2)
    (letter,) = read_dead_letters(faulty_run.settings, faulty_run.dlq)
    assert letter.reason == "record_too_large"
    assert h.header_map(letter.headers)[h.COMMAND_ID] == too_large
    report = check_aggregate(
        faulty_run.settings, widgets, faulty_run.topics, faulty.namespace, faulty_run.codec, sent
    )
    assert report.problems == []
    assert report.events == 2 + 40  # big: versions 1 and 2; nothing of the one too large


def test_a_corrupt_stored_entry_is_dead_lettered_and_the_partition_goes_on(
    faulty_run: FaultyRun,
) -> None:
    producer = faulty_run.producer
    sent = {producer.send(Poke(widget_id=name)) for name in ("broken", "fine")}
    producer.flush()
    wait_for(lambda: sent <= faulty_run.results().keys(), 120, "the first results")
    assert faulty_run.worker.stop() == 0
    home = partition_for("broken", 2)
    raw = Producer({"bootstrap.servers": faulty_run.settings.bootstrap_servers})
    raw.produce(faulty_run.topics.changelog, b"\xc1 not an entry", b"broken", partition=home)
    assert raw.flush(30) == 0
    faulty_run.worker.start(timeout=120)  # restores the corrupt entry into its store
    neighbours = [f"n-{n}" for n in range(40) if partition_for(f"n-{n}", 2) == home]
    broken = producer.send(Poke(widget_id="broken"))
    later = {producer.send(Poke(widget_id=name)) for name in ["fine", *neighbours]}
    producer.flush()
    wait_for(lambda: {broken} | later <= faulty_run.results().keys(), 120, "every result")
    assert faulty_run.worker.running()
    results = faulty_run.results()
    assert (results[broken][0]["outcome"], results[broken][0]["code"]) == (
        "invalid",
        "corrupt_state",
    )
    assert {results[c][0]["outcome"] for c in later} == {"accepted"}
    (letter,) = read_dead_letters(faulty_run.settings, faulty_run.dlq)
    assert letter.reason == "corrupt_state"
    assert letter.source_partition == home
