"""Dead letters parse from any record, and ``partition:offset`` addresses one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, Message

from streamfold.cli.dlq import parse_position
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
from streamfold.errors import ConfigurationError
from streamfold.runtime.dead_letters import UNKNOWN_REASON, DeadLetter, confluent_schema_id

pytestmark = pytest.mark.unit

WRITTEN_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def record(headers: list[tuple[str, bytes | None]] | None, **overrides: object) -> Message:
    fields: dict[str, object] = {
        "topic": "retail.dlq",
        "partition": 2,
        "offset": 41,
        "key": b"s1/apple",
        "value": b"\x00\x00\x00\x00\x07payload",
        "headers": headers,
        "timestamp": (TIMESTAMP_CREATE_TIME, WRITTEN_MS),
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]  # keyword fields of one record


def test_a_dead_letter_parses_its_dlq_headers_and_keeps_the_original_ones_apart() -> None:
    headers: list[tuple[str, bytes | None]] = [
        (COMMAND_ID, b"c-1"),
        (DLQ_REASON, DeadLetterReason.MODEL_INVALID.value.encode()),
        (DLQ_ERROR, b"quantity: must be positive"),
        (DLQ_EXCEPTION, b"streamfold.contracts.codec.ModelInvalidError"),
        (DLQ_SOURCE_TOPIC, b"retail.store_stock.commands"),
        (DLQ_SOURCE_PARTITION, b"3"),
        (DLQ_SOURCE_OFFSET, b"1234"),
        (DLQ_FAILED_AT, b"2026-01-02T03:04:05.678+00:00"),
        (DLQ_ATTEMPTS, b"1"),
        (TENANT, b"acme"),
    ]
    letter = DeadLetter.from_message(record(headers))
    assert letter.topic == "retail.dlq"
    assert (letter.partition, letter.offset, letter.position) == (2, 41, "2:41")
    assert letter.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert letter.key == b"s1/apple"
    assert letter.value == b"\x00\x00\x00\x00\x07payload"
    assert letter.headers == ((COMMAND_ID, b"c-1"), (TENANT, b"acme"))
    assert [name for name, _ in letter.dlq_headers] == [name for name, _ in headers[1:-1]]
    assert letter.reason == DeadLetterReason.MODEL_INVALID
    assert letter.error == "quantity: must be positive"
    assert letter.exception == "streamfold.contracts.codec.ModelInvalidError"
    assert letter.source_topic == "retail.store_stock.commands"
    assert (letter.source_partition, letter.source_offset) == (3, 1234)
    assert letter.source == "retail.store_stock.commands/3/1234"
    assert letter.failed_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert letter.attempts == 1


def test_a_record_without_dlq_headers_still_parses_with_an_unknown_reason() -> None:
    letter = DeadLetter.from_message(
        record(None, key=None, value=None, timestamp=(TIMESTAMP_NOT_AVAILABLE, 0))
    )
    assert letter.reason == UNKNOWN_REASON
    assert (letter.error, letter.exception) == ("", "")
    assert letter.headers == letter.dlq_headers == ()
    assert letter.source_topic is letter.source is None
    assert letter.source_partition is letter.source_offset is None
    assert letter.failed_at is None
    assert letter.timestamp is None
    assert letter.attempts is None
    assert letter.key is letter.value is None


def test_malformed_dlq_headers_leave_their_fields_empty_instead_of_failing() -> None:
    letter = DeadLetter.from_message(
        record(
            [
                (DLQ_REASON, b""),
                (DLQ_SOURCE_TOPIC, b"retail.item.commands"),
                (DLQ_SOURCE_PARTITION, b"two"),
                (DLQ_SOURCE_OFFSET, None),
                (DLQ_FAILED_AT, b"yesterday"),
                (DLQ_ATTEMPTS, b"\xff"),
                ("trace", None),
            ]
        )
    )
    assert letter.reason == UNKNOWN_REASON
    assert letter.source == "retail.item.commands/?/?"
    assert letter.failed_at is None
    assert letter.attempts is None
    assert letter.headers == (("trace", b""),)


def test_a_naive_failure_time_is_taken_as_utc() -> None:
    letter = DeadLetter.from_message(record([(DLQ_FAILED_AT, b"2026-01-02T03:04:05")]))
    assert letter.failed_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "schema_id"),
    [
        (b"\x00\x00\x00\x01\x02body", 258),
        (b"\x00\x00\x00\x00\x07", 7),
        (b"\x00\x00\x00\x07", None),  # shorter than the header
        (b"\x01\x00\x00\x00\x07body", None),  # another magic byte
        (b"", None),
        (None, None),
    ],
)
def test_the_schema_id_is_read_from_confluent_wire_format_only(
    value: bytes | None, schema_id: int | None
) -> None:
    assert confluent_schema_id(value) == schema_id


@pytest.mark.parametrize(
    ("text", "expected"), [("0:0", (0, 0)), ("3:1234", (3, 1234)), (" 12:7 ", (12, 7))]
)
def test_a_position_parses_as_partition_and_offset(text: str, expected: tuple[int, int]) -> None:
    assert parse_position(text) == expected


@pytest.mark.parametrize(
    "text", ["", "3", "3:", ":5", "a:1", "1:b", "-1:5", "1:-5", "1:2:3", "1.5"]
)
def test_a_malformed_position_is_a_configuration_error_that_shows_the_form(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"partition:offset \(e\.g\. 0:42\)"):
        parse_position(text)
