"""The schema registry port and its adapters.

:class:`SchemaRegistry` is what the codec needs from a registry: register a schema under a
subject, fetch a schema by id, and read a subject's latest version. Two adapters:

- :class:`InMemorySchemaRegistry` for unit tests and tools (ids assigned like Confluent's: one
  id per distinct schema, shared across subjects);
- :class:`ConfluentSchemaRegistry` over confluent-kafka's ``SchemaRegistryClient``, which
  speaks to any Confluent-compatible registry (and to its ``mock://`` in-process client).

Errors are translated here, at the boundary, by :func:`translate_registry_errors` (which the
schema evolution workflow uses too): :class:`SchemaNotFoundError` (permanent),
:class:`SchemaRejectedError` (invalid, incompatible or unauthorised, permanent),
:class:`RegistryUnavailableError` (retryable).
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from streamfold.errors import PermanentError, RetryableError

__all__ = [
    "ConfluentSchemaRegistry",
    "InMemorySchemaRegistry",
    "RegisteredSchema",
    "RegistryUnavailableError",
    "SchemaNotFoundError",
    "SchemaRegistry",
    "SchemaRejectedError",
    "translate_registry_errors",
]


class SchemaNotFoundError(PermanentError):
    """No schema with that id, or no version under that subject."""


class SchemaRejectedError(PermanentError):
    """The registry refused a schema: invalid, or incompatible with the subject's history."""


class RegistryUnavailableError(RetryableError):
    """The registry could not be reached or failed on its side; retry later."""


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """A schema as registered under a subject."""

    schema_id: int
    subject: str
    version: int
    schema: str


class SchemaRegistry(Protocol):
    """What streamfold needs from a schema registry (Avro schemas as JSON text)."""

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id."""
        ...

    def get_schema(self, schema_id: int) -> str:
        """Return the schema with id ``schema_id``; raise :class:`SchemaNotFoundError`."""
        ...

    def latest(self, subject: str) -> RegisteredSchema:
        """Return the latest version under ``subject``; raise :class:`SchemaNotFoundError`."""
        ...


def _normalise(schema: str) -> str:
    return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))


class InMemorySchemaRegistry:
    """A thread-safe registry held in memory; no compatibility checks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id."""
        key = _normalise(schema)
        with self._lock:
            schema_id = self._ids.get(key)
            if schema_id is None:
                schema_id = len(self._ids) + 1
                self._ids[key] = schema_id
                self._schemas[schema_id] = schema
            versions = self._subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def get_schema(self, schema_id: int) -> str:
        """Return the schema with id ``schema_id``."""
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise SchemaNotFoundError(f"no schema with id {schema_id}") from None

    def latest(self, subject: str) -> RegisteredSchema:
        """Return the latest version under ``subject``."""
        versions = self._subjects.get(subject)
        if not versions:
            raise SchemaNotFoundError(f"no subject {subject!r}")
        schema_id = versions[-1]
        return RegisteredSchema(schema_id, subject, len(versions), self._schemas[schema_id])

    def subjects(self) -> list[str]:
        """Every subject, sorted."""
        return sorted(self._subjects)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client errors confluent-kafka may let through (httpx2, else httpx)."""
    for module in ("httpx2", "httpx"):
        try:
            return (importlib.import_module(module).TransportError, OSError)
        except ImportError:
            continue
    return (OSError,)


@contextmanager
def translate_registry_errors(action: str) -> Iterator[None]:
    """Translate confluent-kafka registry errors raised inside the block into streamfold's.

    ``action`` names what was attempted and starts the message. An HTTP 404 becomes
    :class:`SchemaNotFoundError`; any other 4xx (invalid, incompatible, unauthorised)
    :class:`SchemaRejectedError`; a 5xx or a transport failure
    :class:`RegistryUnavailableError`.
    """
    from confluent_kafka.schema_registry.error import (  # noqa: PLC0415 - optional, heavy
        SchemaRegistryError,
    )

    try:
        yield
    except _transport_errors() as exc:
        raise RegistryUnavailableError(f"schema registry: {action}: {exc}") from exc
    except SchemaRegistryError as exc:
        status = int(getattr(exc, "http_status_code", -1))
        message = f"schema registry: {action}: {exc}"
        if status in (401, 403):
            message += ": check the registry credentials"
        if status == 404:
            raise SchemaNotFoundError(message) from exc
        if 400 <= status < 500:  # invalid, incompatible, unauthorised: retrying cannot help
            raise SchemaRejectedError(message) from exc
        raise RegistryUnavailableError(message) from exc


class ConfluentSchemaRegistry:
    """:class:`SchemaRegistry` over confluent-kafka's ``SchemaRegistryClient``."""

    def __init__(self, client: Any) -> None:
        from confluent_kafka.schema_registry import Schema  # noqa: PLC0415 - optional, heavy

        self.client = client
        self._schema_type: Callable[..., Any] = Schema

    @classmethod
    def from_url(cls, url: str, **conf: Any) -> ConfluentSchemaRegistry:
        """Connect to the registry at ``url`` (``mock://name`` gives an in-process one)."""
        from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

        return cls(SchemaRegistryClient.new_client({"url": url, **conf}))

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` and return its id."""
        with translate_registry_errors(f"register under {subject!r}"):
            return int(self.client.register_schema(subject, self._schema_type(schema, "AVRO")))

    def get_schema(self, schema_id: int) -> str:
        """Return the schema with id ``schema_id``."""
        with translate_registry_errors(f"get schema id {schema_id}"):
            return str(self.client.get_schema(schema_id).schema_str)

    def latest(self, subject: str) -> RegisteredSchema:
        """Return the latest version under ``subject``."""
        with translate_registry_errors(f"latest of {subject!r}"):
            found = self.client.get_latest_version(subject)
            return RegisteredSchema(
                int(found.schema_id), subject, int(found.version), str(found.schema.schema_str)
            )
