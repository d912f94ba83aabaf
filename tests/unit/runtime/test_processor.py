"""One command through the processor, with a real RocksDB store and an in-memory registry."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from pydantic import ValidationError
from topologies.retail.domain import ReceiveSupply, RecordSale, retail, stock

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.headers import DeadLetterReason
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.messages import Metadata
from streamfold.errors import Rejected
from streamfold.runtime.command_processor import MESSAGE_LIMIT, CommandProcessor, _new_metadata
from streamfold.runtime.processor import Quarantined, UnproducibleRecordError
from streamfold.state.entry import AggregateEntry
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment
from streamfold.transport.partitioning import partition_for

pytestmark = pytest.mark.unit


class Outbox:
    def __init__(self, max_record_bytes: int = 1_000_000) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, str], int | None]] = []
        self.max_record_bytes = max_record_bytes
        self.quarantine: dict[str, Quarantined] = {}

    def quarantined(self, input_id: str) -> Quarantined | None:
        return self.quarantine.pop(input_id, None)

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

    def forwarded(self, aggregate: str) -> None:
        self.outcomes["forwarded"] += 1


@pytest.fixture
def setup(tmp_path: Path) -> tuple[CommandProcessor, PartitionStore, AvroCodec, Counters]:
    codec = AvroCodec(InMemorySchemaRegistry())
    counters = Counters()
    processor = CommandProcessor(
        stock,
        retail.namespace,
        codec,
        partitions=PARTITIONS,
        idempotency_window=4,
        handler_retries=1,
        counters=counters,
    )
    store = PartitionStore(tmp_path / "p0", StoreEnvironment(RocksDBOptions(block_cache_mb=8)))
    return processor, store, codec, counters


PARTITIONS = 6
TOPIC = "retail.store_stock.commands"


def record(
    codec: AvroCodec, command: Any, offset: int, partition: int | None = None, **headers: str
) -> Message:
    """A command record, on its aggregate's partition unless ``partition`` is given."""
    value = codec.writer(TOPIC, type(command), retail.namespace).encode(command)
    key = stock.aggregate_id(command).encode()
    pairs = [(k, v.encode()) for k, v in headers.items()]
    return Message(
        topic=TOPIC,
        partition=partition_for(key, PARTITIONS) if partition is None else partition,
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
    # the result goes to the command's partition number
    assert outbox.sent[-1][4] == partition_for(b"s/i", PARTITIONS)
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
    garbage = Message(topic=TOPIC, partition=0, offset=1, key=b"k", value=b"nope")
    assert processor.process(garbage, store, outbox) == "invalid"
    assert counters.dead == {"malformed_bytes": 1}
    # No command id header: the result carries one derived from topic/partition/offset.
    assert outbox.sent[-1][1] == h.derived_command_id("retail.store_stock.commands", 0, 1).encode()


SUPPLY = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=3)
HOME = partition_for(b"s/i", PARTITIONS)


@pytest.mark.parametrize("keyless", [False, True])
def test_a_command_off_its_partition_is_forwarded_there_and_not_decided(
    setup: Any, keyless: bool
) -> None:
    processor, store, codec, counters = setup
    landed = (HOME + 1) % PARTITIONS
    message = record(codec, SUPPLY, 5, landed, request_id="r-1")
    if keyless:
        message.set_key(None)  # type: ignore[arg-type]
    outbox = Outbox()
    assert processor.process(message, store, outbox) == "forwarded"
    ((topic, key, value, headers, partition),) = outbox.sent  # no result, no event
    assert (topic, key, value, partition) == (TOPIC, b"s/i", message.value(), HOME)
    assert headers[h.FORWARDED_FROM] == f"{TOPIC}/{landed}/5"
    assert headers[h.COMMAND_ID] == h.derived_command_id(TOPIC, landed, 5)  # fixed here
    assert headers[h.REQUEST_ID] == "r-1"
    assert store.staged == 0
    assert counters.outcomes == {"forwarded": 1}


def test_a_keyless_command_on_its_partition_is_decided_there(setup: Any) -> None:
    processor, store, codec, _counters = setup
    message = record(codec, SUPPLY, 5)
    message.set_key(None)  # type: ignore[arg-type]
    assert processor.process(message, store, Outbox()) == "accepted"


@pytest.mark.parametrize("entry", [b"\xc1 not msgpack", AggregateEntry(1, False, b"junk").encode()])
def test_an_entry_or_state_that_cannot_be_read_is_dead_lettered(setup: Any, entry: bytes) -> None:
    processor, store, codec, counters = setup
    store.stage(b"s/i", entry)
    outbox = Outbox()
    assert processor.process(record(codec, SUPPLY, 3), store, outbox) == "invalid"
    assert counters.dead == {"corrupt_state": 1}
    assert [s[0] for s in outbox.sent] == ["retail.dlq", "retail.store_stock.results"]


def test_a_quarantined_command_is_dead_lettered_with_its_reason(setup: Any) -> None:
    processor, store, codec, counters = setup
    command_id = str(uuid.uuid4())
    outbox = Outbox()
    outbox.quarantine[command_id] = Quarantined(DeadLetterReason.RECORD_TOO_LARGE, "too big")
    message = record(codec, SUPPLY, 3, command_id=command_id)
    assert processor.process(message, store, outbox) == "invalid"
    assert counters.dead == {"record_too_large": 1}
    assert outbox.sent[0][3][h.DLQ_ERROR] == "record_too_large: too big"
    assert store.staged == 0
    assert processor.process(record(codec, SUPPLY, 4, command_id=command_id), store, outbox) == (
        "accepted"  # quarantined once: the entry was used up
    )


def test_an_entry_over_the_record_limit_is_unproducible_before_it_is_staged(
    setup: Any,
) -> None:
    processor, store, codec, _counters = setup
    command_id = str(uuid.uuid4())
    with pytest.raises(UnproducibleRecordError) as raised:
        processor.process(record(codec, SUPPLY, 3, command_id=command_id), store, Outbox(20))
    assert (raised.value.input_id, raised.value.reason) == (
        command_id,
        DeadLetterReason.RECORD_TOO_LARGE,
    )
    assert store.staged == 0


def test_a_rejection_message_is_kept_short_in_the_result_and_the_entry(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor, store, codec, _counters = setup
    sale = RecordSale(store_id="s", item_id="i", sale_id="1", quantity=1, unit_price=Decimal("1"))

    def reject(*_args: Any, **_kwargs: Any) -> Any:
        raise Rejected("too_long", "x" * 50_000)

    monkeypatch.setattr(processor.aggregate, "handle", reject)
    outbox = Outbox()
    assert processor.process(record(codec, sale, 3), store, outbox) == "rejected"
    (result,) = results(codec, outbox)
    assert len(result["message"]) == MESSAGE_LIMIT
    entry = AggregateEntry.decode(store.get(b"s/i") or b"")
    ((_id, packed),) = entry.recent
    assert len(packed[4]) == MESSAGE_LIMIT


def test_with_the_state_cache_an_abort_takes_nothing_back_that_was_committed(
    setup: Any,
) -> None:
    """The processor reads its aggregates through the store's decoded cache: after an
    aborted transaction the next command sees the committed aggregate, not the aborted one,
    and a committed aggregate is decoded once, not on every command."""
    processor, store, codec, _counters = setup
    supply = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=5)
    assert processor.process(record(codec, supply, 1), store, Outbox()) == "accepted"
    store.commit(1)
    sale = RecordSale(
        store_id="s", item_id="i", sale_id="a", quantity=5, unit_price=Decimal("1.00")
    )
    assert processor.process(record(codec, sale, 2), store, Outbox()) == "accepted"
    store.discard()  # the transaction aborted: the sale never happened
    decoded = store._cache.hits
    second = RecordSale(
        store_id="s", item_id="i", sale_id="b", quantity=3, unit_price=Decimal("1.00")
    )
    outbox = Outbox()
    assert processor.process(record(codec, second, 3), store, outbox) == "accepted"
    (result,) = results(codec, outbox)
    assert result["version"] == 2  # on the committed version 1, not the aborted 2
    assert store._cache.hits == decoded + 1  # served from the cache, not decoded again
    store.commit(3)
    entry = AggregateEntry.decode(store.get(b"s/i") or b"")
    state = processor._states.decode_as(entry.state or b"", stock.state_type)
    assert (entry.version, state.on_hand) == (2, 2)


def test_the_metadata_the_processor_builds_is_the_one_pydantic_would_build() -> None:
    values: dict[str, Any] = {
        "command_id": uuid.uuid4(),
        "request_id": "r-1",
        "tenant": "t",
        "principal": None,
        "issued_at": datetime.now(UTC),
        "expected_version": 3,
    }
    built, constructed = _new_metadata(dict(values)), Metadata.model_construct(**values)
    assert built == constructed and repr(built) == repr(constructed)
    assert built.model_dump() == constructed.model_dump()
    assert built.model_fields_set == constructed.model_fields_set
    assert built.model_copy(update={"tenant": "u"}).tenant == "u" and built.tenant == "t"
    assert Metadata.model_validate(built.model_dump()) == built
    with pytest.raises(ValidationError):
        built.tenant = "changed"  # type: ignore[misc]  # still frozen
