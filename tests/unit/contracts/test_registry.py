"""The registry port: the in-memory registry and the confluent-kafka adapter."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streamfold.contracts import (
    ConfluentSchemaRegistry,
    InMemorySchemaRegistry,
    RegisteredSchema,
    RegistryUnavailableError,
    SchemaNotFoundError,
    SchemaRegistry,
    SchemaRejectedError,
)
from streamfold.contracts.registry import _transport_errors
from streamfold.errors import PermanentError, RetryableError

pytestmark = pytest.mark.unit

A = '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]}'
A_REFORMATTED = '{"fields":[{"type":"long","name":"x"}],"name":"A","type":"record"}'
B = '{"type": "record", "name": "B", "fields": []}'


@pytest.fixture(params=["memory", "confluent-mock"])
def registry(request: pytest.FixtureRequest) -> SchemaRegistry:
    if request.param == "memory":
        return InMemorySchemaRegistry()
    return ConfluentSchemaRegistry.from_url("mock://registry")  # a fresh store per client


def test_register_is_idempotent(registry: SchemaRegistry) -> None:
    a = registry.register("t-A", A)
    assert registry.register("t-A", A) == a
    b = registry.register("t-B", B)
    assert b != a
    assert registry.get_schema(a).replace(" ", "") == A.replace(" ", "")


def test_latest_version_of_a_subject(registry: SchemaRegistry) -> None:
    a = registry.register("t-X", A)
    b = registry.register("t-X", B)
    latest = registry.latest("t-X")
    assert (latest.schema_id, latest.subject, latest.version) == (b, "t-X", 2)
    assert a != b


def test_missing_schema_and_subject_are_not_found(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaNotFoundError):
        registry.get_schema(12345)
    with pytest.raises(SchemaNotFoundError):
        registry.latest("nobody")


def test_in_memory_registry_normalises_schema_text() -> None:
    registry = InMemorySchemaRegistry()
    assert registry.register("s", A) == registry.register("s", A_REFORMATTED)
    assert registry.register("other-subject", A) == 1  # one id per schema, as Confluent does
    assert registry.latest("s") == RegisteredSchema(1, "s", 1, A)
    assert registry.subjects() == ["other-subject", "s"]


class FailingClient:
    """A SchemaRegistryClient stand-in that fails every call with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> None:
            raise self.error

        return fail


@pytest.mark.parametrize(
    ("error", "translated", "family"),
    [
        (SchemaRegistryError(404, 40401, "Subject not found"), SchemaNotFoundError, PermanentError),
        (SchemaRegistryError(409, 409, "incompatible"), SchemaRejectedError, PermanentError),
        (SchemaRegistryError(401, 401, "unauthorized"), SchemaRejectedError, PermanentError),
        (SchemaRegistryError(500, 50001, "store error"), RegistryUnavailableError, RetryableError),
        (ConnectionRefusedError("refused"), RegistryUnavailableError, RetryableError),
    ],
)
def test_adapter_translates_client_errors(
    error: BaseException, translated: type[Exception], family: type[Exception]
) -> None:
    registry = ConfluentSchemaRegistry(FailingClient(error))
    for call in (lambda: registry.register("s", A), lambda: registry.get_schema(1)):
        with pytest.raises(translated) as raised:
            call()
        assert isinstance(raised.value, family)
        assert raised.value.__cause__ is error
    with pytest.raises(translated, match="latest of 's'"):
        registry.latest("s")


def test_adapter_translates_http_transport_errors() -> None:
    transport = _transport_errors()[0]
    registry = ConfluentSchemaRegistry(FailingClient(transport("connection reset")))
    with pytest.raises(RegistryUnavailableError, match="connection reset"):
        registry.get_schema(1)
