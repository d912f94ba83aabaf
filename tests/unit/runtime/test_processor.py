"""One command through the processor, with a real RocksDB store and an in-memory registry."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from topologies.retail.domain import ReceiveSupply, RecordSale, retail, stock

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.runtime import headers as h
from streamfold.runtime.processor import CommandProcessor
from streamfold.runtime.results import RESULT_NAMESPACE, CommandResult
from streamfold.state.entry import AggregateEntry
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment

pytestmark = pytest.mark.unit


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, str], int | None]] = []

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: h.Headers,
        partition: int | None = None,
    ) -> None:
        self.sent.append((topic, key, value, h.header_map(headers), partition))

    def topics(self) -> Counter[str]:
        return Counter(topic.rsplit(".", 1)[-1] for topic, *_ in self.sent)


class Counters:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()

    def command(self, aggregate: str, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] += n

    def dead_letter(self, aggregate: str, reason: str) -> None:
        self.dead[reason] += 1


@pytest.fixture
def setup(tmp_path: Path) -> tuple[CommandProcessor, PartitionStore, AvroCodec, Counters]:
    codec = AvroCodec(InMemorySchemaRegistry())
    counters = Counters()
    processor = CommandProcessor(
        stock,
        retail.namespace,
        codec,
        idempotency_window=4,
        handler_retries=1,
        counters=counters,
    )
    store = PartitionStore(tmp_path / "p0", StoreEnvironment(RocksDBOptions(block_cache_mb=8)))
    return processor, store, codec, counters


def record(codec: AvroCodec, command: Any, offset: int, **headers: str) -> Message:
    topic = "retail.store_stock.commands"
    value = codec.writer(topic, type(command), retail.namespace).encode(command)
    key = stock.aggregate_id(command).encode()
    pairs = [(k, v.encode()) for k, v in headers.items()]
    return Message(
        topic=topic,
        partition=2,
        offset=offset,
        key=key,
        value=value,
        headers=pairs,
        timestamp=(1, 1_700_000_000_000),
    )


def results(codec: AvroCodec, outbox: Outbox) -> list[dict[str, Any]]:
    reader = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
    return [
        reader.decode_dict(value or b"")[1]
        for topic, _key, value, _headers, _p in outbox.sent
        if topic.endswith(".results")
    ]


def test_an_accepted_command_emits_events_state_result_and_stages_the_entry(setup: Any) -> None:
    processor, store, codec, _counters = setup
    outbox = Outbox()
    command_id = str(uuid.uuid4())
    supply = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=3)
    outcome = processor.process(
        record(codec, supply, 10, command_id=command_id, traceparent="00-abc-def-01"),
        store,
        outbox,
    )
    assert outcome == "accepted"
    assert outbox.topics() == {"events": 1, "state": 1, "results": 1}
    event_headers = outbox.sent[0][3]
    assert event_headers[h.COMMAND_ID] == command_id
    assert event_headers[h.TRACEPARENT] == "00-abc-def-01"
    assert event_headers[h.AGGREGATE_VERSION] == "1"
    (result,) = results(codec, outbox)
    assert (result["outcome"], result["version"], result["event_types"]) == (
        "accepted",
        1,
        ["SupplyReceived"],
    )
    assert outbox.sent[-1][4] == 2  # the result goes to the command's partition number
    entry = AggregateEntry.decode(store.get(b"s/i") or b"")
    assert entry.version == 1
    assert list(store.items()) == []  # staged only: the worker commits it after the transaction


def test_a_repeat_gets_the_first_result_and_no_effect(setup: Any) -> None:
    processor, store, codec, _counters = setup
    sale = RecordSale(
        store_id="s", item_id="i", sale_id="1", quantity=1, unit_price=Decimal("1.00")
    )
    first, again = Outbox(), Outbox()
    assert processor.process(record(codec, sale, 1, command_id=str(uuid.uuid4())), store, first)
    command_id = str(uuid.uuid4())
    assert processor.process(record(codec, sale, 2, command_id=command_id), store, first) == (
        "rejected"
    )
    assert processor.process(record(codec, sale, 3, command_id=command_id), store, again) == (
        "duplicate"
    )
    assert again.topics() == {"results": 1}
    (repeat,) = results(codec, again)
    assert (repeat["outcome"], repeat["code"], repeat["duplicate"]) == (
        "rejected",
        "not_found",
        True,
    )


@pytest.mark.parametrize(
    ("headers", "key", "reason"),
    [
        ({h.EXPECTED_VERSION: "x"}, None, "invalid_headers"),
        ({h.EXPECTED_VERSION: "-1"}, None, "invalid_headers"),
        ({h.ISSUED_AT: "2026-01-01T00:00:00"}, None, "invalid_headers"),
        ({h.COMMAND_ID: "not-a-uuid"}, None, "invalid_headers"),
        ({}, b"other/key", "key_mismatch"),
    ],
)
def test_bad_records_are_dead_lettered_with_their_reason(
    setup: Any, headers: dict[str, str], key: bytes | None, reason: str
) -> None:
    processor, store, codec, counters = setup
    supply = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=3)
    message = record(codec, supply, 7, **headers)
    if key is not None:
        message.set_key(key)
    outbox = Outbox()
    assert processor.process(message, store, outbox) == "invalid"
    dlq = [s for s in outbox.sent if s[0] == "retail.dlq"]
    assert len(dlq) == 1
    assert dlq[0][3][h.DLQ_REASON] == reason
    assert dlq[0][3][h.DLQ_SOURCE_OFFSET] == "7"
    assert counters.dead == {reason: 1}
    assert store.get(b"s/i") is None


def test_garbage_bytes_are_malformed(setup: Any) -> None:
    processor, store, _codec, counters = setup
    outbox = Outbox()
    garbage = Message(
        topic="retail.store_stock.commands", partition=0, offset=1, key=b"k", value=b"nope"
    )
    assert processor.process(garbage, store, outbox) == "invalid"
    assert counters.dead == {"malformed_bytes": 1}
    # No command id header: the result carries one derived from topic/partition/offset.
    assert outbox.sent[-1][1] == h.derived_command_id("retail.store_stock.commands", 0, 1).encode()
