"""Malformed commands of every kind, mixed into live traffic, on a real worker process.

10,000 malformed records at full scale (``STREAMFOLD_TEST_SCALE``), generated at random
for each input dead-letter reason a command can earn on its way in (its bytes, its schema
id, its payload, its record type, its model, its headers, its key), interleaved with good
commands on every partition and followed by more good commands. The test then counts what
must have happened: every reason in the dead-letter topic, each malformed record there
exactly once with the reason it was built for and its original bytes, every partition
carrying some, and every good command processed (the aggregate invariants hold) — the
last ones included, so no partition stalled behind its garbage.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
from tests.fault.report import write_section
from tests.integration.runtime.conftest import RetailRun, results_by_command
from tests.integration.runtime.test_bad_input_and_foreign_clients import wait_for
from topologies.retail.domain import (
    AddItem,
    ReceiveSupply,
    RecordSale,
    SaleRecorded,
    StoreStock,
    SupplyReceived,
    retail,
    stock,
)
from topologies.retail.workload import stock_commands

from streamfold.contracts import headers as h
from streamfold.contracts.codec import (
    CodecError,
    ModelInvalidError,
    RecordReader,
    TruncatedPayloadError,
    UndecodablePayloadError,
    UnknownMagicByteError,
    UnknownRecordTypeError,
    UnknownSchemaIdError,
)
from streamfold.contracts.headers import DeadLetterReason as Reason
from streamfold.domain.naming import context_topics
from streamfold.runtime.dead_letters import read_dead_letters
from streamfold.testing.pytest_plugin import scaled
from streamfold.transport.partitioning import partition_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
#: The dead-letter reason of each codec error, as the worker documents it.
CODEC_REASONS: dict[type[CodecError], Reason] = {
    UnknownMagicByteError: Reason.MALFORMED_BYTES,
    TruncatedPayloadError: Reason.MALFORMED_BYTES,
    UnknownSchemaIdError: Reason.UNKNOWN_SCHEMA_ID,
    UndecodablePayloadError: Reason.UNDECODABLE_PAYLOAD,
    UnknownRecordTypeError: Reason.UNKNOWN_RECORD_TYPE,
    ModelInvalidError: Reason.MODEL_INVALID,
}
#: Every reason a command record earns by what it is, before its aggregate is loaded.
INPUT_REASONS = {*CODEC_REASONS.values(), Reason.INVALID_HEADERS, Reason.KEY_MISMATCH}


@dataclass(frozen=True)
class Malformed:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: Reason


class Garbage:
    """Makes random malformed commands; the codec's own reader confirms each one's reason."""

    def __init__(self, run: RetailRun, seed: int) -> None:
        self.rng = random.Random(seed)
        topic = run.stock_topics.commands
        codec, ns = run.codec, retail.namespace
        self.reader: RecordReader = codec.reader(*stock.commands, namespace=ns)
        self.supply = codec.writer(topic, ReceiveSupply, ns)
        self.sale = codec.writer(topic, RecordSale, ns)
        # Records of types this topic does not carry, with ids the registry knows.
        self.foreign = [
            codec.writer(topic, SupplyReceived, ns).encode_dict(
                {
                    "store_id": "s",
                    "item_id": "i",
                    "supplier_id": "x",
                    "quantity": 1,
                    "received_at": 0,
                }
            ),
            codec.writer(topic, StoreStock, ns).encode(
                StoreStock(store_id="s", item_id="i", on_hand=1)
            ),
            codec.writer(topic, AddItem, ns).encode_dict(
                {"item_id": "i", "name": "n", "price": Decimal("1.00")}
            ),
            codec.writer(topic, SaleRecorded, ns).encode_dict(
                {
                    "store_id": "s",
                    "item_id": "i",
                    "sale_id": "x",
                    "quantity": 1,
                    "unit_price": Decimal("1.00"),
                    "amount": Decimal("1.00"),
                    "sold_at": 0,
                }
            ),
        ]
        self.makers: dict[Reason, Callable[[], tuple[bytes, bytes, list[tuple[str, bytes]]]]]
        self.makers = {
            Reason.MALFORMED_BYTES: self.malformed_bytes,
            Reason.UNKNOWN_SCHEMA_ID: self.unknown_schema_id,
            Reason.UNDECODABLE_PAYLOAD: self.undecodable_payload,
            Reason.UNKNOWN_RECORD_TYPE: self.unknown_record_type,
            Reason.MODEL_INVALID: self.model_invalid,
            Reason.INVALID_HEADERS: self.invalid_headers,
            Reason.KEY_MISMATCH: self.key_mismatch,
        }

    # --- one maker per reason: (key, value, extra headers) --------------------------------

    def key(self) -> bytes:
        return f"store-{self.rng.randrange(97)}/item-{self.rng.randrange(10_000)}".encode()

    def good(self, key: bytes) -> bytes:
        store_id, item_id = key.decode().split("/")
        if self.rng.random() < 0.5:
            return self.supply.encode(
                ReceiveSupply(
                    store_id=store_id,
                    item_id=item_id,
                    supplier_id="x",
                    quantity=self.rng.randint(1, 9),
                )
            )
        return self.sale.encode(
            RecordSale(
                store_id=store_id,
                item_id=item_id,
                sale_id=uuid.uuid4().hex,
                quantity=1,
                unit_price=Decimal("2.50"),
            )
        )

    def noise(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def malformed_bytes(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = self.key()
        choice = self.rng.randrange(3)
        if choice == 0:  # shorter than the header
            return key, self.noise(0, 4), []
        if choice == 1:  # a magic byte that is not 0
            return key, bytes([self.rng.randint(1, 255)]) + self.noise(4, 60), []
        good = self.good(key)  # a record cut short
        return key, good[: self.rng.randint(0, len(good) - 1)], []

    def unknown_schema_id(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = self.key()
        schema_id = self.rng.choice([987_654, 2**31 - 1, 4_000_000_000, 55_555])
        return key, b"\x00" + schema_id.to_bytes(4, "big") + self.good(key)[5:], []

    def undecodable_payload(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = self.key()
        good = self.good(key)
        if self.rng.random() < 0.5:  # trailing bytes
            return key, good + self.noise(1, 20), []
        return key, good[:5] + self.noise(1, 40), []  # random bytes behind a real schema id

    def unknown_record_type(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return self.key(), self.rng.choice(self.foreign), []

    def model_invalid(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = self.key()
        store_id, item_id = key.decode().split("/")
        quantity = self.rng.choice([0, -1, -(2**40)])
        if self.rng.random() < 0.5:
            record = {
                "store_id": store_id,
                "item_id": item_id,
                "supplier_id": "x",
                "quantity": quantity,
            }
            return key, self.supply.encode_dict(record), []
        price = self.rng.choice([Decimal("0.00"), Decimal("-3.10")])
        record = {
            "store_id": store_id,
            "item_id": item_id,
            "sale_id": "s",
            "quantity": self.rng.choice([quantity, 1]),
            "unit_price": price,
        }
        return key, self.sale.encode_dict(record), []

    def invalid_headers(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = self.key()
        name, value = self.rng.choice(
            [
                (h.EXPECTED_VERSION, "not-a-number"),
                (h.EXPECTED_VERSION, "1.5"),
                (h.EXPECTED_VERSION, "-3"),
                (h.EXPECTED_VERSION, "0x10"),
                (h.ISSUED_AT, "yesterday"),
                (h.ISSUED_AT, "2026-01-01T00:00:00"),  # no time zone
            ]
        )
        return key, self.good(key), [(name, value.encode())]

    def key_mismatch(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = self.key()
        other = self.rng.choice([b"another/key", key + b"x", key.upper(), b"\xff\xfe", b""])
        return other, self.good(key), []

    # ---------------------------------------------------------------------------------------

    def make(self, reason: Reason) -> Malformed:
        """A malformed record for ``reason``; a codec reason is confirmed by decoding it."""
        while True:
            key, value, extra = self.makers[reason]()
            if reason in (Reason.INVALID_HEADERS, Reason.KEY_MISMATCH):
                return Malformed(key, value, extra, reason)
            try:
                self.reader.decode(value)
            except CodecError as exc:
                found = next(r for kind, r in CODEC_REASONS.items() if isinstance(exc, kind))
                if found == reason:
                    return Malformed(key, value, extra, reason)
            # Random bytes that happen to decode (or fail another way): draw again.


def test_malformed_records_of_every_kind_never_stall_live_traffic(
    retail_run: RetailRun, test_scale: float
) -> None:
    retail_run.worker("w1")
    topics = retail_run.stock_topics
    garbage = Garbage(retail_run, seed=2112)
    malformed_count = scaled(10_000, test_scale, 700)
    good_count = scaled(5_000, test_scale, 500)
    kinds = sorted(INPUT_REASONS)
    bad: dict[str, Malformed] = {}  # command id -> what was sent
    good: set[str] = set()
    commands = list(stock_commands(300, good_count + 200, 29))
    head, last = commands[:good_count], commands[good_count:]
    # The tail, sent after all the garbage, reaches every partition.
    assert {partition_for(stock.aggregate_id(c), PARTITIONS) for c in last} == set(
        range(PARTITIONS)
    )
    for n in range(malformed_count):
        record = garbage.make(kinds[n % len(kinds)])
        command_id = str(uuid.uuid4())
        headers = [(h.COMMAND_ID, command_id.encode()), *record.headers]
        retail_run.producer.send_raw(topics.commands, record.key, record.value, headers)
        bad[command_id] = record
        while len(good) < (n + 1) * good_count // malformed_count:  # evenly interleaved
            good.add(retail_run.producer.send(head[len(good)]))
    tail = {retail_run.producer.send(command) for command in last}
    retail_run.producer.flush()
    assert len(good) == good_count and len(tail) == len(last)
    dlq = context_topics("retail", retail_run.prefix).dlq

    def all_dead_lettered() -> bool:
        assert retail_run.workers[0].running(), "the worker died"
        return len(read_dead_letters(retail_run.settings, dlq)) >= len(bad)

    sent_at = time.monotonic()
    wait_for(all_dead_lettered, 300, "the dead letters")
    dead_lettered_in = time.monotonic() - sent_at
    letters = read_dead_letters(retail_run.settings, dlq)
    # Every reason is there, as many times as records of it were sent.
    by_reason = Counter(letter.reason for letter in letters)
    assert set(by_reason) == {r.value for r in INPUT_REASONS}, by_reason
    assert by_reason == Counter(record.reason.value for record in bad.values())
    # Each malformed record exactly once, with its reason, bytes and source.
    ids = [h.header_map(letter.headers)[h.COMMAND_ID] for letter in letters]
    assert len(ids) == len(set(ids)) == len(bad)
    assert set(ids) == bad.keys()
    for letter, command_id in zip(letters, ids, strict=True):
        sent = bad[command_id]
        assert (letter.reason, letter.value, letter.key) == (
            sent.reason.value,
            sent.value,
            sent.key,
        ), command_id
        assert letter.source_topic == topics.commands and letter.error, letter
    assert {letter.source_partition for letter in letters} == set(range(PARTITIONS))
    # The good traffic, and the tail sent after all the garbage, was all processed.
    # (The invariants: one result per command sent, an invalid one for each malformed.)
    retail_run.wait_until_processed(good | tail | bad.keys(), timeout=120)
    results = results_by_command(retail_run.settings, retail_run.codec, topics.results)
    assert {results[c][0]["outcome"] for c in bad} == {"invalid"}
    assert Counter(results[c][0]["code"] for c in bad) == by_reason
    processed_in = time.monotonic() - sent_at
    reasons = "\n".join(f"| {reason} | {count:,} |" for reason, count in sorted(by_reason.items()))
    write_section(
        "malformed-traffic",
        "Malformed records mixed into live traffic (1 worker, 1 broker)",
        f"{len(bad):,} malformed records of {len(by_reason)} kinds, evenly interleaved with"
        f" {len(good):,} good commands, then {len(tail):,} more on every partition: each"
        f" malformed record dead-lettered once with its reason, bytes and source, and answered"
        f" `invalid`; every good command processed (no partition stalled). From the last"
        f" record sent: every dead letter in {dead_lettered_in:.1f} s, every result in"
        f" {processed_in:.1f} s.\n\n| reason | records |\n|---|---|\n{reasons}\n",
        test_scale,
    )
