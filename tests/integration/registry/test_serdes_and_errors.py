"""confluent-kafka's Avro serdes through our registry; evolution; bad input; basic auth."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = pytest.mark.integration

ITEM_V1 = {
    "type": "record",
    "name": "ItemPriced",
    "namespace": "shop",
    "fields": [{"name": "sku", "type": "string"}, {"name": "cents", "type": "long"}],
}
ITEM_V2 = {
    **ITEM_V1,
    "fields": [*ITEM_V1["fields"], {"name": "currency", "type": "string", "default": "EUR"}],
}


def call(
    url: str, method: str, path: str, body: bytes | None = None, auth: str | None = None
) -> tuple[int, Any]:
    """One raw HTTP request; returns (status, decoded JSON body)."""
    request = urllib.request.Request(f"{url}{path}", data=body, method=method)
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def topic() -> str:
    return f"shop.items-{uuid.uuid4().hex[:8]}"


def serializer(client: Any, schema: dict[str, Any], **conf: Any) -> AvroSerializer:
    return AvroSerializer(
        client,
        json.dumps(schema),
        conf={
            "subject.name.strategy": lambda ctx, name: f"{ctx.topic}-{name}",
            **conf,
        },
    )


@pytest.mark.parametrize("auto_register", [True, False])
def test_avro_serializer_round_trip(schema_registry: Any, topic: str, auto_register: bool) -> None:
    client = schema_registry.client()
    subject = f"{topic}-shop.ItemPriced"
    if not auto_register:
        client.register_schema(subject, Schema(json.dumps(ITEM_V1), "AVRO"))
    ser = serializer(client, ITEM_V1, **{"auto.register.schemas": auto_register})
    context = SerializationContext(topic, MessageField.VALUE)
    payload = ser({"sku": "A-1", "cents": 250}, context)
    assert payload[0] == 0  # Confluent wire format: magic byte, then the 4-byte schema id
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_latest_version(subject).schema_id == schema_id
    decoded = AvroDeserializer(schema_registry.client())(payload, context)
    assert decoded == {"sku": "A-1", "cents": 250}


def test_serializer_without_auto_register_refuses_an_unknown_schema(
    schema_registry: Any, topic: str
) -> None:
    ser = serializer(schema_registry.client(), ITEM_V1, **{"auto.register.schemas": False})
    with pytest.raises(SchemaRegistryError) as caught:
        ser({"sku": "A-1", "cents": 1}, SerializationContext(topic, MessageField.VALUE))
    assert caught.value.error_code == 40401


def test_old_records_decode_with_the_new_reader(schema_registry: Any, topic: str) -> None:
    client = schema_registry.client()
    context = SerializationContext(topic, MessageField.VALUE)
    old = serializer(client, ITEM_V1)({"sku": "A-1", "cents": 250}, context)
    new_writer = serializer(client, ITEM_V2)  # adding a field with a default: BACKWARD-safe
    new = new_writer({"sku": "B-2", "cents": 99, "currency": "USD"}, context)
    reader = AvroDeserializer(schema_registry.client(), json.dumps(ITEM_V2))
    assert reader(old, context) == {"sku": "A-1", "cents": 250, "currency": "EUR"}
    assert reader(new, context) == {"sku": "B-2", "cents": 99, "currency": "USD"}
    versions = client.get_versions(f"{topic}-shop.ItemPriced")
    assert versions == [1, 2]


def test_breaking_changes_get_409_naming_the_field(schema_registry: Any, topic: str) -> None:
    subject = f"{topic}-shop.ItemPriced"
    url = schema_registry.url
    body = json.dumps({"schema": json.dumps(ITEM_V1)}).encode()
    assert call(url, "POST", f"/subjects/{subject}/versions", body)[0] == 200
    removed = {**ITEM_V1, "fields": [{"name": "sku", "type": "string"}]}
    retyped = {
        **ITEM_V1,
        "fields": [{"name": "sku", "type": "string"}, {"name": "cents", "type": "string"}],
    }
    needs_field = {**ITEM_V1, "fields": [*ITEM_V1["fields"], {"name": "tax", "type": "long"}]}
    call(url, "PUT", f"/config/{subject}", json.dumps({"compatibility": "FULL"}).encode())
    for breaking, field in ((removed, "cents"), (retyped, "cents"), (needs_field, "tax")):
        status, answer = call(
            url,
            "POST",
            f"/subjects/{subject}/versions",
            json.dumps({"schema": json.dumps(breaking)}).encode(),
        )
        assert (status, answer["error_code"]) == (409, 409)
        assert f"additionalInfo:'{field}'" in answer["message"]
        status, verdict = call(
            url,
            "POST",
            f"/compatibility/subjects/{subject}/versions/latest?verbose=true",
            json.dumps({"schema": json.dumps(breaking)}).encode(),
        )
        assert status == 200
        assert verdict["is_compatible"] is False
        assert any(field in message for message in verdict["messages"])


BAD_REQUESTS = [
    # (method, path, body, status, error_code)
    ("POST", "/subjects/{s}/versions", b"{not json", 400, 400),
    ("POST", "/subjects/{s}/versions", b"[1, 2]", 400, 400),
    ("POST", "/subjects/{s}/versions", b'{"schema": {"type": "string"}}', 400, 400),
    ("POST", "/subjects/{s}/versions", b"{}", 422, 42201),
    ("POST", "/subjects/{s}/versions", b'{"schema": "{\\"type\\": \\"recrd\\"}"}', 422, 42201),
    ("POST", "/subjects/{s}/versions", b'{"schema": "not json at all"}', 422, 42201),
    ("POST", "/subjects/{s}", b"{bad", 400, 400),
    ("POST", "/compatibility/subjects/{s}/versions/latest", b"{bad", 400, 400),
    ("PUT", "/config/{s}", b"{bad", 400, 400),
    ("PUT", "/config/{s}", b'{"compatibility": "SOMETIMES"}', 422, 42203),
    ("PUT", "/mode/{s}", b'{"mode": "SOMETIMES"}', 422, 42204),
    ("GET", "/subjects/{s}-unknown/versions", None, 404, 40401),
    ("GET", "/subjects/{s}-unknown/versions/latest", None, 404, 40401),
    ("GET", "/subjects/{s}/versions/42", None, 404, 40402),
    ("GET", "/subjects/{s}/versions/-2", None, 422, 42202),
    ("GET", "/subjects/{s}/versions/0", None, 422, 42202),
    ("GET", "/subjects/{s}/versions/abc", None, 422, 42202),
    ("GET", "/subjects/{s}/versions/99999999999", None, 422, 42202),
    ("DELETE", "/subjects/{s}/versions/-7", None, 422, 42202),
    ("DELETE", "/subjects/{s}-unknown", None, 404, 40401),
    ("GET", "/schemas/ids/123456", None, 404, 40403),
    ("GET", "/schemas/ids/abc", None, 404, 40403),
    ("GET", "/subjects?offset=x", None, 400, 400),
    ("GET", "/no/such/path", None, 404, 404),
    ("PATCH", "/subjects", None, 405, 405),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_input_gets_the_confluent_error(
    schema_registry: Any,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    code: int,
) -> None:
    subject = f"bad-{uuid.uuid4().hex[:8]}-value"
    good = json.dumps({"schema": json.dumps(ITEM_V1)}).encode()
    assert call(schema_registry.url, "POST", f"/subjects/{subject}/versions", good)[0] == 200
    got_status, answer = call(schema_registry.url, method, path.format(s=subject), body)
    assert (got_status, answer["error_code"]) == (status, code), answer
    assert answer["message"]


def test_latest_is_also_minus_one(schema_registry: Any) -> None:
    subject = f"m1-{uuid.uuid4().hex[:8]}-value"
    good = json.dumps({"schema": json.dumps(ITEM_V1)}).encode()
    call(schema_registry.url, "POST", f"/subjects/{subject}/versions", good)
    status, answer = call(schema_registry.url, "GET", f"/subjects/{subject}/versions/-1")
    assert (status, answer["version"]) == (200, 1)


def test_basic_auth(schema_registry_factory: Any) -> None:
    registry = schema_registry_factory(auth=("ops", "s3cret"))
    status, answer = call(registry.url, "GET", "/subjects")
    assert (status, answer["error_code"]) == (401, 40101)
    assert call(registry.url, "GET", "/subjects", auth="ops:wrong")[0] == 401
    assert call(registry.url, "GET", "/subjects", auth="ops:s3cret") == (200, [])
    schema_id = registry.client().register_schema("a-value", Schema(json.dumps(ITEM_V1), "AVRO"))
    assert schema_id == 1
