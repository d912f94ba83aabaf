"""Each call of confluent-kafka's ``SchemaRegistryClient`` against ``streamfold registry serve``.

One registry process serves the module; each test works under its own subjects.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Metadata,
    MetadataProperties,
    Schema,
    SchemaReference,
    ServerConfig,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError

pytestmark = pytest.mark.integration


def record(name: str, *fields: tuple[str, Any], **extra: Any) -> Schema:
    """An Avro record schema with ``fields`` as (name, type) or (name, type, default)."""
    rendered = []
    for spec in fields:
        field: dict[str, Any] = {"name": spec[0], "type": spec[1]}
        if len(spec) > 2:
            field["default"] = spec[2]
        rendered.append(field)
    return Schema(json.dumps({"type": "record", "name": name, "fields": rendered}), "AVRO", **extra)


V1 = record("Item", ("sku", "string"))
V2 = record("Item", ("sku", "string"), ("note", "string", ""))
BREAKING = record("Item", ("sku", "long"))


@pytest.fixture
def subject() -> str:
    return f"s-{uuid.uuid4().hex[:10]}-value"


@pytest.fixture
def client(schema_registry: Any) -> Any:
    return schema_registry.client()


def error_of(call: Any) -> tuple[int, int]:
    with pytest.raises(SchemaRegistryError) as caught:
        call()
    return caught.value.http_status_code, caught.value.error_code


def test_register_schema_returns_one_id_per_distinct_schema(client: Any, subject: str) -> None:
    first = client.register_schema(subject, V1)
    again = client.register_schema(subject, Schema(V1.schema_str.replace(",", ", "), "AVRO"))
    other = client.register_schema(f"{subject}-other", V1)
    assert first == again == other
    assert client.register_schema(subject, V2) != first


def test_register_schema_full_response(client: Any, subject: str) -> None:
    registered = client.register_schema_full_response(subject, V1)
    assert registered.version == 1
    assert registered.schema_id >= 1
    assert registered.guid


def test_register_incompatible_is_409(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    assert error_of(lambda: client.register_schema(subject, BREAKING)) == (409, 409)


def test_register_invalid_schema_is_42201(client: Any, subject: str) -> None:
    bad = Schema('{"type": "record", "name": "X", "fields": [{"name": "a"}]}', "AVRO")
    assert error_of(lambda: client.register_schema(subject, bad)) == (422, 42201)
    other_type = Schema('{"type": "object"}', "JSON")
    assert error_of(lambda: client.register_schema(subject, other_type)) == (422, 42201)


def test_get_schema_by_id_and_subject(client: Any, subject: str) -> None:
    schema_id = client.register_schema(subject, V1)
    fetched = client.get_schema(schema_id, subject_name=subject)
    assert json.loads(fetched.schema_str) == json.loads(V1.schema_str)
    assert error_of(lambda: client.get_schema(987654)) == (404, 40403)


def test_get_schema_by_guid(client: Any, subject: str) -> None:
    registered = client.register_schema_full_response(subject, V1)
    fetched = client.get_schema_by_guid(registered.guid)
    assert json.loads(fetched.schema_str) == json.loads(V1.schema_str)
    assert error_of(lambda: client.get_schema_by_guid(str(uuid.uuid4()))) == (404, 40403)


def test_get_schema_types(client: Any) -> None:
    assert client.get_schema_types() == ["AVRO"]


def test_get_subjects_by_schema_id(client: Any, subject: str) -> None:
    schema_id = client.register_schema(subject, V1)
    client.register_schema(f"{subject}-b", V1)
    subjects = client.get_subjects_by_schema_id(schema_id)
    assert {subject, f"{subject}-b"} <= set(subjects)
    assert client.get_subjects_by_schema_id(schema_id, subject_name=subject) == [subject]


def test_get_schema_versions(client: Any, subject: str) -> None:
    schema_id = client.register_schema(subject, V1)
    pairs = {(v.subject, v.version) for v in client.get_schema_versions(schema_id)}
    assert (subject, 1) in pairs


def test_lookup_schema(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    found = client.lookup_schema(subject, V1)
    assert (found.subject, found.version) == (subject, 1)
    assert error_of(lambda: client.lookup_schema(subject, V2)) == (404, 40403)
    assert error_of(lambda: client.lookup_schema(f"{subject}-none", V1)) == (404, 40401)


def test_get_subjects_with_prefix_and_deleted(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    client.register_schema(f"{subject}-gone", V1)
    client.delete_subject(f"{subject}-gone")
    assert client.get_subjects(subject_prefix=subject) == [subject]
    assert client.get_subjects(subject_prefix=subject, deleted=True) == [
        subject,
        f"{subject}-gone",
    ]
    assert client.get_subjects(subject_prefix=subject, deleted_only=True) == [f"{subject}-gone"]


def test_delete_subject_soft_then_permanent(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    assert error_of(lambda: client.delete_subject(subject, permanent=True)) == (404, 40405)
    assert client.delete_subject(subject) == [1, 2]
    assert error_of(lambda: client.delete_subject(subject)) == (404, 40404)
    assert error_of(lambda: client.get_latest_version(subject)) == (404, 40401)
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    assert error_of(lambda: client.delete_subject(subject)) == (404, 40401)


def test_get_latest_version(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    latest = client.get_latest_version(subject)
    assert latest.version == 2
    assert json.loads(latest.schema.schema_str) == json.loads(V2.schema_str)


def test_get_latest_with_metadata(client: Any, subject: str) -> None:
    tagged = record(
        "Item",
        ("sku", "string"),
        metadata=Metadata(None, MetadataProperties({"owner": "retail"}), None),
    )
    client.register_schema(subject, V1)
    client.register_schema(subject, tagged)
    client.register_schema(subject, V2)
    found = client.get_latest_with_metadata(subject, {"owner": "retail"})
    assert found.version == 2
    missing = error_of(lambda: client.get_latest_with_metadata(subject, {"owner": "nobody"}))
    assert missing == (404, 40403)


def test_get_version_and_deleted_versions(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    assert client.get_version(subject, 1).version == 1
    client.delete_version(subject, 1)
    assert error_of(lambda: client.get_version(subject, 1)) == (404, 40402)
    assert client.get_version(subject, 1, deleted=True).version == 1
    assert error_of(lambda: client.get_version(subject, 9)) == (404, 40402)


def test_schema_references_and_referenced_by(client: Any, subject: str) -> None:
    money = Schema(
        json.dumps(
            {
                "type": "record",
                "name": "Money",
                "namespace": "shop",
                "fields": [{"name": "cents", "type": "long"}],
            }
        ),
        "AVRO",
    )
    money_subject = f"{subject}-money"
    client.register_schema(money_subject, money)
    price = Schema(
        json.dumps(
            {
                "type": "record",
                "name": "Price",
                "fields": [{"name": "amount", "type": "shop.Money"}],
            }
        ),
        "AVRO",
        references=[SchemaReference("shop.Money", money_subject, 1)],
    )
    price_id = client.register_schema(subject, price)
    assert client.get_referenced_by(money_subject, 1) == [price_id]
    fetched = client.get_schema(price_id)
    assert [r.subject for r in fetched.references] == [money_subject]
    assert error_of(lambda: client.delete_version(money_subject, 1)) == (422, 42206)
    dangling = Schema(
        price.schema_str,
        "AVRO",
        references=[SchemaReference("shop.Money", money_subject, 7)],
    )
    assert error_of(lambda: client.register_schema(f"{subject}-x", dangling)) == (422, 42201)


def test_get_versions(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    client.delete_version(subject, 2)
    assert client.get_versions(subject) == [1]
    assert client.get_versions(subject, deleted=True) == [1, 2]
    assert client.get_versions(subject, deleted_only=True) == [2]
    assert error_of(lambda: client.get_versions(f"{subject}-none")) == (404, 40401)


def test_delete_version_soft_then_permanent(
    client: Any, subject: str, schema_registry: Any
) -> None:
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    assert error_of(lambda: client.delete_version(subject, 2, permanent=True)) == (404, 40407)
    assert client.delete_version(subject, 2) == 2
    assert error_of(lambda: client.delete_version(subject, 2)) == (404, 40406)
    assert client.delete_version(subject, 2, permanent=True) == 2
    assert client.get_versions(subject, deleted=True) == [1]
    # Numbering goes on after the highest version held (a fresh client: no cached answer).
    assert schema_registry.client().register_schema_full_response(subject, V2).version == 2


def test_set_and_get_compatibility(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    assert error_of(lambda: client.get_compatibility(subject)) == (404, 40408)
    assert client.set_compatibility(subject, "NONE") == {"compatibility": "NONE"}
    assert client.get_compatibility(subject) == "NONE"
    client.register_schema(subject, BREAKING)  # allowed under NONE
    assert error_of(lambda: client.set_compatibility(subject, "SIDEWAYS")) == (422, 42203)


def test_test_compatibility(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    assert client.test_compatibility(subject, V2) is True
    assert client.test_compatibility(subject, BREAKING) is False
    assert client.test_compatibility(subject, V2, version=1) is True
    assert error_of(lambda: client.test_compatibility(subject, V2, version=5)) == (404, 40402)
    assert error_of(lambda: client.test_compatibility(f"{subject}-none", V2)) == (404, 40401)


def test_test_compatibility_all_versions_transitive(client: Any, subject: str) -> None:
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    client.register_schema(subject, record("Item", ("sku", "string"), ("qty", "int", 0)))
    client.register_schema(subject, record("Item", ("sku", "string")))
    # Needs qty without a default: reads v2 data (no qty) under no level; v1 data it could.
    needs_qty = record("Item", ("sku", "string"), ("qty", "int"))
    assert client.test_compatibility_all_versions(subject, needs_qty) is False
    assert client.test_compatibility_all_versions(subject, V2) is True
    assert client.test_compatibility_all_versions(f"{subject}-none", V2) is True


def test_set_get_delete_config(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    answer = client.set_config(subject, ServerConfig(compatibility=ConfigCompatibilityLevel.FULL))
    assert answer["compatibility"] == "FULL"
    assert client.get_config(subject).compatibility_level == "FULL"
    assert client.delete_config(subject).compatibility_level == "FULL"
    assert error_of(lambda: client.get_config(subject)) == (404, 40408)
    assert client.get_config().compatibility_level == "BACKWARD"


def test_global_config(client: Any) -> None:
    assert client.set_compatibility(level="FORWARD") == {"compatibility": "FORWARD"}
    try:
        assert client.get_compatibility() == "FORWARD"
    finally:
        client.delete_config()
    assert client.get_compatibility() == "BACKWARD"


def test_subject_mode(client: Any, subject: str) -> None:
    client.register_schema(subject, V1)
    assert error_of(lambda: client.get_mode(subject)) == (404, 40409)
    assert client.update_mode(subject, "READONLY") == "READONLY"
    assert client.get_mode(subject) == "READONLY"
    assert error_of(lambda: client.register_schema(subject, V2)) == (422, 42205)
    assert client.delete_mode(subject) == "READONLY"
    client.register_schema(subject, V2)
    assert error_of(lambda: client.update_mode(subject, "SOMETIMES")) == (422, 42204)
    assert error_of(lambda: client.update_mode(subject, "IMPORT")) == (422, 42205)
    assert client.update_mode(subject, "IMPORT", force=True) == "IMPORT"


def test_global_mode(client: Any) -> None:
    assert client.get_global_mode() == "READWRITE"
    assert client.update_global_mode("READONLY") == "READONLY"
    try:
        assert client.get_global_mode() == "READONLY"
    finally:
        assert client.update_global_mode("READWRITE") == "READWRITE"


def test_get_contexts(client: Any) -> None:
    assert client.get_contexts() == ["."]


def test_subject_names_with_a_slash(client: Any, subject: str) -> None:
    slashed = f"team/{subject}"
    schema_id = client.register_schema(slashed, V1)
    assert client.get_latest_version(slashed).schema_id == schema_id
    assert slashed in client.get_subjects()
    assert client.delete_subject(slashed) == [1]


def test_associations_are_refused_clearly(client: Any) -> None:
    with pytest.raises(SchemaRegistryError) as caught:
        client.get_associations_by_resource_name("orders", "lkc-1")
    assert caught.value.http_status_code == 404
    assert "not supported" in caught.value.error_message
    assert error_of(lambda: client.delete_associations("res-1")) == (404, 404)
