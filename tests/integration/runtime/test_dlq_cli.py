"""``streamfold dlq list | show | replay`` against the real broker.

Each test creates a fresh dead-letter topic and a fresh source topic and writes synthetic
dead letters into the first with a plain producer: the original key, value and headers plus
the ``dlq.*`` headers a worker adds.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from topologies.retail.domain import RecordSale, retail
from typer.testing import CliRunner, Result

from streamfold.cli.app import _mount, app
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.headers import (
    COMMAND_ID,
    DLQ_ATTEMPTS,
    DLQ_ERROR,
    DLQ_EXCEPTION,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    TENANT,
    DeadLetterReason,
)
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.errors import StreamfoldError
from streamfold.runtime.dead_letters import (
    DLQ_REPLAYED_FROM,
    DeadLetterNotFoundError,
    find_dead_letter,
    read_dead_letters,
)
from streamfold.transport.partitioning import partition_for
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration

if not app.registered_groups:
    _mount()

SOURCE_PARTITIONS = 5
ORIGINAL_HEADERS = [(COMMAND_ID, b"c-42"), (TENANT, b"acme"), ("binary", b"\xff\x00")]


@pytest.fixture(autouse=True)
def restore_log_handlers() -> Iterator[None]:
    """Undo the CLI's logging setup, whose handler writes to the runner's closed stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@dataclass(frozen=True)
class Topics:
    dlq: str
    source: str


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> Topics:
    return Topics(dlq=topic_factory(partitions=2), source=topic_factory(SOURCE_PARTITIONS))


def dead_letter(
    reason: DeadLetterReason,
    source: str,
    *,
    error: str = "boom",
    source_offset: int = 7,
    key: bytes = b"s1/apple",
    value: bytes = b"original value",
) -> dict[str, Any]:
    """A record as a worker dead-letters it: the original plus the ``dlq.*`` headers."""
    dlq_headers = [
        (DLQ_REASON, reason.value.encode()),
        (DLQ_ERROR, error.encode()),
        (DLQ_EXCEPTION, b"builtins.ValueError"),
        (DLQ_SOURCE_TOPIC, source.encode()),
        (DLQ_SOURCE_PARTITION, str(partition_for(key, SOURCE_PARTITIONS)).encode()),
        (DLQ_SOURCE_OFFSET, str(source_offset).encode()),
        (DLQ_FAILED_AT, b"2026-03-04T05:06:07+00:00"),
        (DLQ_ATTEMPTS, b"3"),
    ]
    return {"key": key, "value": value, "headers": [*ORIGINAL_HEADERS, *dlq_headers]}


def write(
    settings: KafkaSettings, topic: str, *records: dict[str, Any], partition: int = 0
) -> None:
    producer = Producer(settings.common_config())
    for record in records:
        producer.produce(topic, partition=partition, **record)
    assert producer.flush(30) == 0


def read_all(settings: KafkaSettings, topic: str, partitions: int) -> list[Message]:
    """Every record of ``topic``, read with a plain consumer."""
    consumer = Consumer(
        settings.consumer_config(f"g-{uuid.uuid4().hex}", **{"enable.partition.eof": True})
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: list[Message] = []
    ended: set[int] = set()
    try:
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                ended.add(int(msg.partition() or 0))
                if len(ended) == partitions:
                    break
                continue
            found.append(msg)
    finally:
        consumer.close()
    return found


def cli(settings: KafkaSettings, *args: str) -> Result:
    return CliRunner().invoke(app, ["dlq", *args, "--bootstrap", settings.bootstrap_servers])


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the table ``dlq list`` prints, as lists of cells."""
    lines = [line for line in output.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, StreamfoldError), result.exception
    line = f"error: {result.exception}"
    assert "\n" not in line
    return line


def test_list_shows_each_dead_letter_with_its_reason_and_filters_by_reason(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    write(
        kafka_settings,
        topics.dlq,
        dead_letter(DeadLetterReason.MODEL_INVALID, topics.source, error="quantity: too small"),
        dead_letter(DeadLetterReason.HANDLER_ERROR, topics.source, error="x" * 300),
    )
    write(
        kafka_settings,
        topics.dlq,
        dead_letter(DeadLetterReason.MODEL_INVALID, topics.source, source_offset=9),
        partition=1,
    )
    result = cli(kafka_settings, "list", "--topic", topics.dlq)
    assert result.exit_code == 0, result.output
    source = f"{topics.source}/{partition_for(b's1/apple', SOURCE_PARTITIONS)}"
    assert table_rows(result.output) == [
        ["0:0", "2026-03-04T05:06:07+00:00", "model_invalid", f"{source}/7", "quantity: too small"],
        ["0:1", "2026-03-04T05:06:07+00:00", "handler_error", f"{source}/7", "x" * 59 + "…"],
        ["1:0", "2026-03-04T05:06:07+00:00", "model_invalid", f"{source}/9", "boom"],
    ]

    filtered = cli(kafka_settings, "list", "--topic", topics.dlq, "--reason", "model_invalid")
    assert filtered.exit_code == 0, filtered.output
    assert [row[0] for row in table_rows(filtered.output)] == ["0:0", "1:0"]

    limited = cli(kafka_settings, "list", "--topic", topics.dlq, "--limit", "1", "-r", "boom")
    assert limited.output.strip() == f"no dead letters in {topics.dlq} with reason boom"
    limited = cli(kafka_settings, "list", "--topic", topics.dlq, "--limit", "2")
    assert [row[0] for row in table_rows(limited.output)] == ["0:0", "0:1"]


def test_list_by_context_name_reads_the_context_dlq_topic_and_says_when_it_is_empty(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    context = f"dlq_{uuid.uuid4().hex[:10]}"
    topic_factory(partitions=3, name=f"{context}.dlq")
    result = cli(kafka_settings, "list", context)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"no dead letters in {context}.dlq"


def test_list_of_a_missing_topic_is_a_one_line_error(kafka_settings: KafkaSettings) -> None:
    context = f"dlq_{uuid.uuid4().hex[:10]}"
    line = one_line_error(cli(kafka_settings, "list", context))
    assert line == f"error: topic {context}.dlq does not exist"


def test_only_committed_dead_letters_are_read(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    producer = Producer(kafka_settings.transactional_producer_config(f"tx-{uuid.uuid4().hex}"))
    producer.init_transactions(30)
    for commit, reason in (
        (False, DeadLetterReason.MALFORMED_BYTES),
        (True, DeadLetterReason.KEY_MISMATCH),
    ):
        producer.begin_transaction()
        producer.produce(topics.dlq, partition=0, **dead_letter(reason, topics.source))
        assert producer.flush(30) == 0  # an abort purges what is not sent yet
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    letters = read_dead_letters(kafka_settings, topics.dlq)
    assert [(d.position, d.reason) for d in letters] == [("0:2", "key_mismatch")]
    with pytest.raises(DeadLetterNotFoundError, match="aborted record"):
        find_dead_letter(kafka_settings, topics.dlq, 0, 0)
    assert find_dead_letter(kafka_settings, topics.dlq, 0, 2).reason == "key_mismatch"


def test_reading_can_start_at_an_offset_and_keep_to_some_partitions(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    reasons = list(DeadLetterReason)[:3]
    for partition in (0, 1):
        write(
            kafka_settings,
            topics.dlq,
            *(dead_letter(reason, topics.source) for reason in reasons),
            partition=partition,
        )
    letters = read_dead_letters(kafka_settings, topics.dlq, partitions=[1], since_offset=1)
    assert [(d.position, d.reason) for d in letters] == [("1:1", reasons[1]), ("1:2", reasons[2])]
    assert read_dead_letters(kafka_settings, topics.dlq, since_offset=3) == []
    with pytest.raises(StreamfoldError, match=r"has partitions 0\.\.1, not 2"):
        read_dead_letters(kafka_settings, topics.dlq, partitions=[2])


def test_show_prints_every_header_the_key_the_value_and_the_whole_error(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    error = "first line of a long error " + "y" * 200 + "\nsecond line"
    value = b"\x00\x00\x00\x00\x2a\x02hi"
    write(
        kafka_settings,
        topics.dlq,
        dead_letter(DeadLetterReason.UNDECODABLE_PAYLOAD, topics.source, error=error, value=value),
    )
    result = cli(kafka_settings, "show", "--topic", topics.dlq, "0:0")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"dead letter  {topics.dlq} 0:0")
    assert "reason       undecodable_payload" in lines
    assert "exception    builtins.ValueError" in lines
    assert "attempts     3" in lines
    assert "  first line of a long error " + "y" * 200 in lines
    assert "  second line" in lines
    for name, expected in [
        (COMMAND_ID, "c-42"),
        (TENANT, "acme"),
        ("binary", "0xff00"),
        (DLQ_REASON, "undecodable_payload"),
        (DLQ_SOURCE_TOPIC, topics.source),
        (DLQ_FAILED_AT, "2026-03-04T05:06:07+00:00"),
    ]:
        assert f"  {name} = {expected}" in lines
    assert "key          s1/apple" in lines
    assert f"value        {len(value)} bytes, Confluent wire format, schema id 42" in lines
    assert "  000000  00 00 00 00 2a 02 68 69" in lines


def test_replay_puts_the_original_record_on_the_partition_of_its_key(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    key = b"s7/pear"
    write(kafka_settings, topics.dlq, dead_letter(DeadLetterReason.HANDLER_ERROR, topics.source))
    write(
        kafka_settings,
        topics.dlq,
        dead_letter(DeadLetterReason.HANDLER_ERROR, topics.source, key=key, value=b"\x01raw"),
        partition=1,
    )
    result = cli(kafka_settings, "replay", "--topic", topics.dlq, "1:0")
    assert result.exit_code == 0, result.output
    partition = partition_for(key, SOURCE_PARTITIONS)
    assert result.stdout.strip() == (
        f"replayed {topics.dlq} 1:0 to {topics.source} partition {partition} offset 0"
    )
    (replayed,) = read_all(kafka_settings, topics.source, SOURCE_PARTITIONS)
    assert (replayed.partition(), replayed.key(), replayed.value()) == (partition, key, b"\x01raw")
    assert replayed.headers() == [
        *ORIGINAL_HEADERS,
        (DLQ_REPLAYED_FROM, f"{topics.dlq}/1/0".encode()),
    ]


def test_replay_with_a_value_file_replaces_only_the_value(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    write(kafka_settings, topics.dlq, dead_letter(DeadLetterReason.MODEL_INVALID, topics.source))
    fixed = tmp_path / "fixed.bin"
    fixed.write_bytes(b"\x00corrected\xff")
    result = cli(kafka_settings, "replay", "--topic", topics.dlq, "0:0", "--value-file", str(fixed))
    assert result.exit_code == 0, result.output
    (replayed,) = read_all(kafka_settings, topics.source, SOURCE_PARTITIONS)
    assert replayed.key() == b"s1/apple"
    assert replayed.value() == b"\x00corrected\xff"
    assert replayed.partition() == partition_for(b"s1/apple", SOURCE_PARTITIONS)
    assert replayed.headers() == [
        *ORIGINAL_HEADERS,
        (DLQ_REPLAYED_FROM, f"{topics.dlq}/0/0".encode()),
    ]


def test_an_unknown_offset_is_a_one_line_error_and_nothing_is_replayed(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    write(kafka_settings, topics.dlq, dead_letter(DeadLetterReason.MODEL_INVALID, topics.source))
    line = one_line_error(cli(kafka_settings, "replay", "--topic", topics.dlq, "0:5"))
    assert line == f"error: no dead letter at {topics.dlq} 0:5: partition 0 holds offsets 0..0"
    line = one_line_error(cli(kafka_settings, "show", "--topic", topics.dlq, "1:0"))
    assert line == f"error: no dead letter at {topics.dlq} 1:0: partition 1 holds no records"
    line = one_line_error(cli(kafka_settings, "show", "--topic", topics.dlq, "7:0"))
    assert line == f"error: no dead letter at {topics.dlq} 7:0: the topic has partitions 0..1"
    line = one_line_error(cli(kafka_settings, "show", "--topic", topics.dlq, "zero"))
    assert "partition:offset (e.g. 0:42)" in line
    assert read_all(kafka_settings, topics.source, SOURCE_PARTITIONS) == []


def test_replay_json_encodes_a_retail_command_with_the_registry(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path, schema_registry: Any
) -> None:
    write(
        kafka_settings,
        topics.dlq,
        dead_letter(DeadLetterReason.UNDECODABLE_PAYLOAD, topics.source, value=b"garbage"),
    )
    document = tmp_path / "sale.json"
    sale = {
        "store_id": "s1",
        "item_id": "apple",
        "sale_id": "r-9",
        "quantity": 2,
        "unit_price": "0.40",
    }
    document.write_text(json.dumps(sale))
    result = cli(
        kafka_settings,
        "replay",
        "--topic",
        topics.dlq,
        "0:0",
        "--json",
        str(document),
        "--type",
        "RecordSale",
        "-c",
        "topologies.retail.domain:retail",
        "--registry",
        schema_registry.url,
    )
    assert result.exit_code == 0, result.output
    (replayed,) = read_all(kafka_settings, topics.source, SOURCE_PARTITIONS)
    assert replayed.key() == b"s1/apple"
    assert replayed.partition() == partition_for(b"s1/apple", SOURCE_PARTITIONS)
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(schema_registry.url))
    decoded = codec.reader(RecordSale, namespace=retail.namespace).decode_as(
        replayed.value() or b"", RecordSale
    )
    assert decoded == RecordSale(
        store_id="s1", item_id="apple", sale_id="r-9", quantity=2, unit_price=Decimal("0.40")
    )
    subject = f"{topics.source}-{retail.full_name(RecordSale)}"
    assert schema_registry.client().get_latest_version(subject).version == 1


def test_replay_json_that_is_not_a_valid_command_is_a_one_line_error(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    write(kafka_settings, topics.dlq, dead_letter(DeadLetterReason.MODEL_INVALID, topics.source))
    document = tmp_path / "sale.json"
    document.write_text(json.dumps({"store_id": "s1", "item_id": "apple", "quantity": 0}))
    args = ["replay", "--topic", topics.dlq, "0:0", "--json", str(document)]
    line = one_line_error(
        cli(kafka_settings, *args, "--type", "RecordSale", "-c", "topologies.retail.domain")
    )
    assert line.startswith(f"error: {document} is not a valid RecordSale: ")
    assert "sale_id: Field required" in line and "quantity: Input should be greater than 0" in line
    line = one_line_error(
        cli(kafka_settings, *args, "--type", "SellEverything", "-c", "topologies.retail.domain")
    )
    assert line.startswith("error: context retail has no command 'SellEverything': it has ")
    assert read_all(kafka_settings, topics.source, SOURCE_PARTITIONS) == []
