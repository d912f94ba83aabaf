"""The Confluent wire codec: magic byte 0, 4-byte big-endian schema id, Avro binary.

Two layers, one per use:

- the fast path for a worker's hot loop, on plain dicts: :meth:`RecordWriter.encode_dict`
  and :meth:`RecordReader.decode_dict`. Schemas are parsed once (:class:`Contract`), the
  5-byte header is precomputed per writer, and a writer schema fetched by id is cached with
  its resolution plan. Writers, and readers of a record written with the reader's own schema,
  are compiled to Python functions (:mod:`streamfold.contracts.compiled`), with fastavro
  behind them for everything they leave alone;
- the model path, on pydantic objects: :meth:`RecordWriter.encode` and
  :meth:`RecordReader.decode`, which add ``model_dump`` / ``model_validate``.

Decoding resolves the writer's schema (by id, from the registry) against the reader's schema
of the same record name, so an old record decodes with the new reader schema. Subjects follow
TopicRecordNameStrategy (:func:`streamfold.domain.naming.subject_name`).

Every failure is a :class:`CodecError` (permanent: the bytes will not get better) that names
what was wrong: :class:`UnknownMagicByteError`, :class:`UnknownSchemaIdError`,
:class:`TruncatedPayloadError`, :class:`UndecodablePayloadError`,
:class:`UnknownRecordTypeError`, :class:`ModelInvalidError`, :class:`EncodeError`.
"""

from __future__ import annotations

import functools
import json
import struct
import threading
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Generic, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import BaseModel, ValidationError

from streamfold.contracts.avro import avro_schema
from streamfold.contracts.compiled import (
    CompiledReader,
    CompiledWriter,
    compile_reader,
    compile_writer,
)
from streamfold.contracts.registry import SchemaNotFoundError, SchemaRegistry
from streamfold.domain.naming import subject_name
from streamfold.errors import ConfigurationError, PermanentError

__all__ = [
    "MAGIC_BYTE",
    "AvroCodec",
    "CodecError",
    "Contract",
    "EncodeError",
    "ModelInvalidError",
    "RecordReader",
    "RecordWriter",
    "TruncatedPayloadError",
    "UndecodablePayloadError",
    "UnknownMagicByteError",
    "UnknownRecordTypeError",
    "UnknownSchemaIdError",
]

M = TypeVar("M", bound=BaseModel)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">BI")  # magic byte, schema id
HEADER_SIZE = _HEADER.size
# What fastavro raises on bytes that do not match the schema, besides running out of input.
_DECODE_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeDecodeError)
_ENCODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


class CodecError(PermanentError):
    """A record could not be encoded or decoded."""


class UnknownMagicByteError(CodecError):
    """The payload does not start with the Confluent magic byte 0."""


class UnknownSchemaIdError(CodecError):
    """The registry has no schema with the payload's schema id."""


class TruncatedPayloadError(CodecError):
    """The payload ends before the header or the record does."""


class UndecodablePayloadError(CodecError):
    """The Avro body does not decode with the writer schema (or has trailing bytes)."""


class UnknownRecordTypeError(CodecError):
    """The payload's record type is not one this reader accepts."""


class ModelInvalidError(CodecError):
    """The decoded record does not validate as its pydantic model."""


class EncodeError(CodecError):
    """A record does not fit its schema."""


@dataclass(frozen=True, slots=True, eq=False)
class Contract(Generic[M]):
    """A model with its generated Avro schema, full name and parsed (compiled) schema."""

    model: type[M]
    schema: dict[str, Any]
    full_name: str
    parsed: Any
    #: The compiled writer of the schema (None: fastavro writes it).
    compiled: CompiledWriter | None

    @classmethod
    def of(cls, model: type[M], namespace: str) -> Contract[M]:
        """The contract of ``model`` in ``namespace`` (generated and parsed once, cached)."""
        return _contract(model, namespace)

    @property
    def schema_str(self) -> str:
        """The schema as compact JSON text, as sent to a registry."""
        return json.dumps(self.schema, separators=(",", ":"))


@functools.cache
def _contract(model: type[BaseModel], namespace: str) -> Contract[Any]:
    schema = avro_schema(model, namespace)
    parsed = parse_schema(schema)
    return Contract(model, schema, f"{namespace}.{model.__name__}", parsed, compile_writer(parsed))


class RecordWriter(Generic[M]):
    """Encodes one record type for one topic; the header and schema are precompiled, and so
    is the writer itself where :mod:`streamfold.contracts.compiled` can (else fastavro)."""

    __slots__ = ("_compiled", "_header", "_parsed", "contract", "schema_id")

    def __init__(self, contract: Contract[M], schema_id: int) -> None:
        self.contract = contract
        self.schema_id = schema_id
        self._parsed = contract.parsed
        self._header = _HEADER.pack(MAGIC_BYTE, schema_id)
        self._compiled = contract.compiled

    def encode_dict(self, record: dict[str, Any]) -> bytes:
        """Encode a plain dict (Avro-ready values) to wire bytes: the fast path."""
        if self._compiled is not None:
            out = bytearray(self._header)
            try:
                self._compiled(record, out)
                return bytes(out)
            except Exception:  # noqa: BLE001 - fastavro writes it or names what is wrong
                pass
        buf = BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self._parsed, record)
        except _ENCODE_ERRORS as exc:
            raise EncodeError(f"record does not fit {self.contract.full_name}: {exc}") from exc
        return buf.getvalue()

    def encode(self, message: M) -> bytes:
        """Encode a model instance to wire bytes."""
        return self.encode_dict(message.model_dump())


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read one writer schema id: writer schema, reader schema (None = same)."""

    writer: Any
    reader: Any
    contract: Contract[Any] | None
    full_name: str
    compiled: CompiledReader | None  # when there is nothing to resolve


class RecordReader:
    """Decodes the record types a topic carries, resolving each writer schema by id.

    Built with contracts, it accepts exactly their record names and reads with their schemas;
    built with none, it accepts any record and reads with the writer's schema (dicts only).
    """

    def __init__(self, codec: AvroCodec, contracts: tuple[Contract[Any], ...]) -> None:
        self._codec = codec
        self._contracts = {c.full_name: c for c in contracts}
        self._plans: dict[int, _Plan] = {}

    def decode_dict(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode wire bytes to ``(record full name, record dict)``: the fast path."""
        if len(data) < HEADER_SIZE:
            raise TruncatedPayloadError(f"payload of {len(data)} bytes is shorter than the header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise UnknownMagicByteError(f"magic byte is {magic}, expected {MAGIC_BYTE}")
        plan = self._plans.get(schema_id)
        if plan is None:
            plan = self._plan(schema_id)
        if plan.compiled is not None:
            try:
                return plan.full_name, plan.compiled(data, HEADER_SIZE)
            except Exception:  # noqa: BLE001 - fastavro reads it or names what is wrong
                pass
        buf = BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            # A record schema always reads as a dict; fastavro's annotation is the union.
            record: dict[str, Any] = schemaless_reader(buf, plan.writer, plan.reader)  # type: ignore[assignment]
        except EOFError as exc:
            raise TruncatedPayloadError(
                f"payload ends inside a {plan.full_name} record (schema id {schema_id})"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise UndecodablePayloadError(
                f"payload does not decode as {plan.full_name} (schema id {schema_id}): {exc}"
            ) from exc
        if buf.tell() != len(data):
            raise UndecodablePayloadError(
                f"{len(data) - buf.tell()} trailing bytes after a {plan.full_name} record "
                f"(schema id {schema_id})"
            )
        return plan.full_name, record

    def decode(self, data: bytes) -> BaseModel:
        """Decode wire bytes to the model of its record type."""
        full_name, record = self.decode_dict(data)
        contract = self._contracts.get(full_name)
        if contract is None:
            raise UnknownRecordTypeError(f"reader has no model for {full_name}")
        model: type[BaseModel] = contract.model
        try:
            return model.model_validate(record)
        except ValidationError as exc:
            raise ModelInvalidError(f"{full_name} does not validate as a model: {exc}") from exc

    def decode_as(self, data: bytes, model: type[M]) -> M:
        """Decode wire bytes that must hold a ``model`` record."""
        decoded = self.decode(data)
        if not isinstance(decoded, model):
            raise UnknownRecordTypeError(
                f"expected a {model.__name__} record, got {type(decoded).__name__}"
            )
        return decoded

    def _plan(self, schema_id: int) -> _Plan:
        writer_schema = self._codec.writer_schema(schema_id)
        name = writer_schema["name"]
        full_name = name if "." in name else f"{writer_schema.get('namespace', '')}.{name}"
        full_name = full_name.lstrip(".")
        contract = self._contracts.get(full_name)
        if contract is None and self._contracts:
            accepted = ", ".join(sorted(self._contracts))
            raise UnknownRecordTypeError(
                f"schema id {schema_id} is a {full_name} record; this reader accepts {accepted}"
            )
        writer = parse_schema(writer_schema)
        # Resolution costs time on every record: skip it when the schemas are identical.
        same = contract is None or _same_schema(writer_schema, contract.schema)
        reader = None if same or contract is None else contract.parsed
        compiled = compile_reader(writer) if reader is None else None
        plan = _Plan(writer, reader, contract, full_name, compiled)
        self._plans[schema_id] = plan
        return plan


def _same_schema(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class AvroCodec:
    """Builds writers and readers over one schema registry, caching ids and schemas.

    With ``auto_register`` (the default) a writer registers its schema under
    ``{topic}-{full name}``; without it, the subject's latest schema must equal the writer's.
    """

    def __init__(self, registry: SchemaRegistry, *, auto_register: bool = True) -> None:
        self.registry = registry
        self.auto_register = auto_register
        self._lock = threading.Lock()
        self._writer_schemas: dict[int, dict[str, Any]] = {}

    def writer(self, topic: str, model: type[M], namespace: str) -> RecordWriter[M]:
        """A writer of ``model`` records to ``topic``; registers the schema if needed."""
        contract = Contract.of(model, namespace)
        subject = subject_name(topic, contract.full_name)
        if self.auto_register:
            schema_id = self.registry.register(subject, contract.schema_str)
        else:
            latest = self.registry.latest(subject)
            if not _same_schema(json.loads(latest.schema), contract.schema):
                raise EncodeError(
                    f"subject {subject!r} latest version {latest.version} differs from "
                    f"{contract.full_name} as generated; register it first"
                )
            schema_id = latest.schema_id
        with self._lock:
            self._writer_schemas.setdefault(schema_id, contract.schema)
        return RecordWriter(contract, schema_id)

    def reader(self, *models: type[BaseModel], namespace: str | None = None) -> RecordReader:
        """A reader of ``models`` records (any record, as dicts, when none are given)."""
        if models and namespace is None:
            raise ConfigurationError("reader(): pass the namespace of the models")
        contracts = tuple(Contract.of(m, namespace or "") for m in models)
        return RecordReader(self, contracts)

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The schema with ``schema_id``, fetched from the registry once."""
        schema = self._writer_schemas.get(schema_id)
        if schema is None:
            try:
                text = self.registry.get_schema(schema_id)
            except SchemaNotFoundError as exc:
                raise UnknownSchemaIdError(f"schema id {schema_id} is not in the registry") from exc
            schema = json.loads(text)
            if not isinstance(schema, dict):
                raise UndecodablePayloadError(f"schema id {schema_id} is not an Avro record")
            with self._lock:
                self._writer_schemas[schema_id] = schema
        return schema
