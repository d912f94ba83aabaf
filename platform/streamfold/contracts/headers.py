"""The Kafka headers streamfold reads and writes: one module owns their names.

Commands carry, and everything a command causes (events, state, result, dead letter) carries
on: ``command_id``, ``request_id``, ``tenant``, ``principal``, ``traceparent`` (W3C), and
for a saga-sent command ``correlation_id``, ``causation_id``, ``saga`` and ``saga_id``. Events
and state add ``message_type`` and ``aggregate_version``. A command may carry
``expected_version`` (optimistic concurrency) and ``issued_at`` (ISO 8601).

Header values are UTF-8 strings, so any client (kcat ``-H command_id=...``, a Java producer)
can set them. A command without ``command_id`` gets one derived from its topic, partition and
offset, so that reprocessing the same record after a crash yields the same id.

Dead letters keep the original key, value and headers and add the ``dlq.*`` headers below.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

__all__ = [
    "AGGREGATE_VERSION",
    "CAUSATION_ID",
    "COMMAND_ID",
    "CORRELATION_ID",
    "DLQ_ATTEMPTS",
    "DLQ_ERROR",
    "DLQ_EXCEPTION",
    "DLQ_FAILED_AT",
    "DLQ_REASON",
    "DLQ_REPLAYED_FROM",
    "DLQ_SOURCE_OFFSET",
    "DLQ_SOURCE_PARTITION",
    "DLQ_SOURCE_TOPIC",
    "EXPECTED_VERSION",
    "FORWARDED_FROM",
    "ISSUED_AT",
    "MESSAGE_TYPE",
    "PRINCIPAL",
    "PROPAGATED",
    "REQUEST_ID",
    "SAGA",
    "SAGA_ID",
    "SAGA_INPUT",
    "SAGA_SOURCE",
    "SAGA_TIME",
    "TENANT",
    "TRACEPARENT",
    "DeadLetterReason",
    "Headers",
    "dead_letter_headers",
    "derived_command_id",
    "header_list",
    "header_map",
    "qualified_name",
]

COMMAND_ID = "command_id"
REQUEST_ID = "request_id"
TENANT = "tenant"
PRINCIPAL = "principal"
TRACEPARENT = "traceparent"
MESSAGE_TYPE = "message_type"
AGGREGATE_VERSION = "aggregate_version"
EXPECTED_VERSION = "expected_version"
ISSUED_AT = "issued_at"
#: On a command a worker forwarded to its aggregate's partition: ``topic/partition/offset``
#: of where it had landed (another partitioner, no key, an explicit partition).
FORWARDED_FROM = "forwarded_from"
#: On a saga-sent command and all it causes: the process it belongs to, and the input
#: (``topic/partition/offset``, or the timer) that caused it.
CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
#: On a saga-sent command and its result: the saga (``context.saga``) and the instance's id,
#: so the result finds its way back to that instance.
SAGA = "saga"
SAGA_ID = "saga_id"
#: On a saga's input record: what it is (``event``, ``outcome``) and where it came from.
SAGA_INPUT = "saga.input"
SAGA_SOURCE = "saga.source"
#: On a saga's input record: the source record's timestamp (ms), the input's time.
SAGA_TIME = "saga.time"

#: Headers copied from a command onto everything it causes.
PROPAGATED = (
    COMMAND_ID,
    REQUEST_ID,
    TENANT,
    PRINCIPAL,
    TRACEPARENT,
    CORRELATION_ID,
    CAUSATION_ID,
    SAGA,
    SAGA_ID,
)

DLQ_REASON = "dlq.reason"
DLQ_ERROR = "dlq.error"  # the error message
DLQ_EXCEPTION = "dlq.exception"  # the exception's qualified class name
DLQ_SOURCE_TOPIC = "dlq.source_topic"
DLQ_SOURCE_PARTITION = "dlq.source_partition"
DLQ_SOURCE_OFFSET = "dlq.source_offset"
DLQ_FAILED_AT = "dlq.failed_at"  # ISO 8601, UTC
DLQ_ATTEMPTS = "dlq.attempts"  # how many times the handler ran
DLQ_REPLAYED_FROM = "dlq.replayed_from"  # on a replayed record: topic/partition/offset

Headers = list[tuple[str, bytes]]

_NAMESPACE = uuid.UUID("0b0f5bd2-7c1a-4d8e-8f55-3c7c2b0d9a61")


class DeadLetterReason(StrEnum):
    """Why a record went to the dead-letter topic."""

    MALFORMED_BYTES = "malformed_bytes"  # no Confluent wire-format header, or truncated
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"  # the registry has no schema with that id
    UNDECODABLE_PAYLOAD = "undecodable_payload"  # the bytes do not decode with that schema
    UNKNOWN_RECORD_TYPE = "unknown_record_type"  # a record type this topic does not carry
    MODEL_INVALID = "model_invalid"  # decodes, but the pydantic model rejects it
    INVALID_HEADERS = "invalid_headers"  # e.g. a non-numeric expected_version
    KEY_MISMATCH = "key_mismatch"  # the key is not the aggregate id the command addresses
    HANDLER_ERROR = "handler_error"  # decide/evolve still raised after the retries
    RECORD_TOO_LARGE = "record_too_large"  # a record it causes exceeds the size limit
    UNENCODABLE = "unencodable"  # a record it causes cannot be encoded (e.g. its state)
    CORRUPT_STATE = "corrupt_state"  # its aggregate's stored entry or state cannot be read
    PARKED_BEHIND = "parked_behind"  # an event handler's: an earlier event of its aggregate failed


RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


def header_map(headers: RawHeaders) -> dict[str, str]:
    """Headers as a dict of strings (the last value wins; undecodable bytes are replaced)."""
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {k: _text(v) for k, v in pairs}


def header_list(headers: RawHeaders) -> Headers:
    """Headers as (name, bytes) pairs, as they were."""
    if not headers:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs]


def _text(value: str | bytes | None) -> str:
    if isinstance(value, str):
        return value
    return (value or b"").decode("utf-8", "replace")


def derived_command_id(topic: str, partition: int, offset: int) -> str:
    """The stable command id of a record that carries none."""
    return str(uuid.uuid5(_NAMESPACE, f"{topic}/{partition}/{offset}"))


def dead_letter_headers(
    original: RawHeaders,
    reason: DeadLetterReason,
    error: str,
    exception: str,
    source: tuple[str, int, int],
    attempts: int,
) -> Headers:
    """A dead letter's headers: the record's own (earlier ``dlq.*`` ones dropped), then the
    reason, the error (cut to 4,000 characters), the exception's qualified class name, the
    source topic/partition/offset, the failure time (now) and the attempts."""
    from datetime import UTC, datetime  # noqa: PLC0415 - this module's other users need none

    topic, partition, offset = source
    kept = [(k, v) for k, v in header_list(original) if not k.startswith("dlq.")]
    return [
        *kept,
        (DLQ_REASON, reason.value.encode()),
        (DLQ_ERROR, error[:4000].encode()),
        (DLQ_EXCEPTION, exception.encode()),
        (DLQ_SOURCE_TOPIC, topic.encode()),
        (DLQ_SOURCE_PARTITION, str(partition).encode()),
        (DLQ_SOURCE_OFFSET, str(offset).encode()),
        (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        (DLQ_ATTEMPTS, str(attempts).encode()),
    ]


def qualified_name(error: BaseException) -> str:
    """``module.Class`` of an exception, as ``dlq.exception`` names it."""
    return f"{type(error).__module__}.{type(error).__qualname__}"


def encode(pairs: Iterable[tuple[str, str | None]]) -> Headers:
    """Header tuples from (name, value) pairs, skipping absent values."""
    return [(k, v.encode()) for k, v in pairs if v is not None]
