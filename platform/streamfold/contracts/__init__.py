"""Contracts: Avro schemas generated from the domain models, and the wire codec.

- :mod:`~streamfold.contracts.avro`: pydantic model → Avro schema;
- :mod:`~streamfold.contracts.schema_files`: the checked-in ``schemas/`` tree;
- :mod:`~streamfold.contracts.registry`: the registry port and its adapters;
- :mod:`~streamfold.contracts.codec`: Confluent wire format encode / decode.
"""

from __future__ import annotations

from streamfold.contracts.avro import SchemaGenerationError, avro_schema, canonical_json
from streamfold.contracts.codec import (
    AvroCodec,
    CodecError,
    Contract,
    EncodeError,
    ModelInvalidError,
    RecordReader,
    RecordWriter,
    TruncatedPayloadError,
    UndecodablePayloadError,
    UnknownMagicByteError,
    UnknownRecordTypeError,
    UnknownSchemaIdError,
)
from streamfold.contracts.registry import (
    ConfluentSchemaRegistry,
    InMemorySchemaRegistry,
    RegisteredSchema,
    RegistryUnavailableError,
    SchemaNotFoundError,
    SchemaRegistry,
    SchemaRejectedError,
)

__all__ = [
    "AvroCodec",
    "CodecError",
    "ConfluentSchemaRegistry",
    "Contract",
    "EncodeError",
    "InMemorySchemaRegistry",
    "ModelInvalidError",
    "RecordReader",
    "RecordWriter",
    "RegisteredSchema",
    "RegistryUnavailableError",
    "SchemaGenerationError",
    "SchemaNotFoundError",
    "SchemaRegistry",
    "SchemaRejectedError",
    "TruncatedPayloadError",
    "UndecodablePayloadError",
    "UnknownMagicByteError",
    "UnknownRecordTypeError",
    "UnknownSchemaIdError",
    "avro_schema",
    "canonical_json",
]
