"""The pure parts of the schema evolution workflow: plan, field summary, diff, settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from topologies.retail import retail

from streamfold.cli.edge import registry_settings
from streamfold.contracts.compatibility import CompatibilityLevel, Incompatibility
from streamfold.contracts.evolution import (
    CheckStatus,
    FieldChanges,
    RegistryClientSettings,
    SubjectCheck,
    field_changes,
    planned_schemas,
    register_plan,
    schema_diff,
)
from streamfold.contracts.registry import SchemaRejectedError
from streamfold.contracts.schema_files import render_schema_files
from streamfold.domain import BoundedContext, Command, Event, State

pytestmark = pytest.mark.unit

NS = "io.streamfold.retail"


def test_retail_plan_puts_each_record_on_its_aggregate_topic() -> None:
    plan = {p.subject: p for p in planned_schemas([retail])}
    expected = {
        "retail.supplier.commands": ["RegisterSupplier"],
        "retail.supplier.events": ["SupplierRegistered"],
        "retail.supplier.state": ["Supplier"],
        "retail.item.commands": ["AddItem", "ChangePrice", "DeleteItem", "RecoverItem"],
        "retail.item.events": ["ItemAdded", "PriceChanged", "ItemDeleted", "ItemRecovered"],
        "retail.item.state": ["Item"],
        "retail.store_stock.commands": [
            "ReceiveSupply",
            "SetReorderPolicy",
            "RecordSale",
            "ShipPurchase",
            "AdjustStock",
        ],
        "retail.store_stock.events": [
            "SupplyReceived",
            "ReorderPolicySet",
            "SaleRecorded",
            "StockBelowReorderPoint",
            "PurchaseShipped",
            "StockAdjusted",
        ],
        "retail.store_stock.state": ["StoreStock"],
        "retail.purchase_order.commands": [
            "RaisePurchaseOrder",
            "ConfirmDelivery",
            "ReorderPurchaseOrder",
            "CancelPurchaseOrder",
        ],
        "retail.purchase_order.events": [
            "PurchaseOrderRaised",
            "DeliveryConfirmed",
            "PurchaseOrderReordered",
            "PurchaseOrderCancelled",
        ],
        "retail.purchase_order.state": ["PurchaseOrder"],
        "retail.purchase.commands": ["PlacePurchase", "ClosePurchase"],
        "retail.purchase.events": ["PurchasePlaced", "PurchaseClosed"],
        "retail.purchase.state": ["Purchase"],
        "retail.invoice.commands": ["IssueInvoice", "RecordPayment", "VoidInvoice"],
        "retail.invoice.events": ["InvoiceChanged"],
        "retail.invoice.state": ["Invoice"],
    }
    subjects = {f"{topic}-{NS}.{name}" for topic, names in expected.items() for name in names}
    assert set(plan) == subjects
    assert list(plan) == sorted(plan)
    priced = plan[f"retail.item.events-{NS}.PriceChanged"]
    assert (priced.topic, priced.record, priced.kind) == (
        "retail.item.events",
        f"{NS}.PriceChanged",
        "event",
    )
    assert (priced.context, priced.aggregate) == ("retail", "item")


def test_planned_schema_text_is_the_checked_in_text() -> None:
    files = render_schema_files([retail])
    for item in planned_schemas([retail]):
        assert item.schema == files[f"retail/{item.record.rsplit('.', 1)[1]}.avsc"]


class Touch(Command):
    key: str


class Poke(Command):
    key: str


class Touched(Event):
    key: str


class First(State):
    key: str


class Second(State):
    key: str


def test_an_event_evolved_by_two_aggregates_is_planned_on_both_event_topics() -> None:
    ctx = BoundedContext("shared_events", namespace="test.shared")
    first = ctx.aggregate("first", state=First, id="key")
    second = ctx.aggregate("second", state=Second, id="key")
    first.decides(Touch, creates=True)(lambda state, cmd: Touched(key=cmd.key))
    second.decides(Poke, creates=True)(lambda state, cmd: Touched(key=cmd.key))
    first.evolves(Touched, creates=True)(lambda state, event: First(key=event.key))
    second.evolves(Touched, creates=True)(lambda state, event: Second(key=event.key))

    subjects = [p.subject for p in planned_schemas([ctx]) if p.kind == "event"]
    assert subjects == [
        "shared_events.first.events-test.shared.Touched",
        "shared_events.second.events-test.shared.Touched",
    ]


def _record(*fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": "Thing", "namespace": "t", "fields": list(fields)})


def test_field_changes_name_added_removed_retyped_and_defaults() -> None:
    old = _record(
        {"name": "id", "type": "string"},
        {"name": "gone", "type": "long"},
        {"name": "qty", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "size", "type": "long"},
    )
    new = _record(
        {"name": "id", "type": "string"},
        {"name": "qty", "type": "string"},
        {"name": "note", "type": ["null", "string"]},
        {"name": "size", "type": "long", "default": 0},
        {"name": "currency", "type": "string", "default": "EUR"},
    )
    changes = field_changes(old, new)
    assert changes == FieldChanges(
        added=("currency",),
        removed=("gone",),
        type_changed=(("qty", "long", "string"),),
        default_added=("size",),
        default_removed=("note",),
    )
    assert changes.describe() == [
        "+ currency",
        "- gone",
        "~ qty: long -> string",
        "+ default of size",
        "- default of note",
    ]


def test_field_changes_of_identical_schemas_is_empty_and_of_a_new_one_all_added() -> None:
    text = _record({"name": "id", "type": "string"}, {"name": "n", "type": "long"})
    assert not field_changes(text, text)
    assert field_changes(None, text).added == ("id", "n")


def test_schema_diff_is_a_unified_diff_of_pretty_sorted_json() -> None:
    old = _record({"name": "id", "type": "string"})
    new = _record(
        {"name": "id", "type": "string"}, {"name": "currency", "type": "string", "default": "EUR"}
    )
    diff = schema_diff("t.events-t.Thing", old, new, version=3)
    assert diff.startswith(
        "--- t.events-t.Thing (registered version 3)\n+++ t.events-t.Thing (working tree)\n"
    )
    assert '+      "name": "currency",' in diff
    assert '-      "name": "id"' not in diff
    assert schema_diff("s", new, new) == ""
    assert schema_diff("s", None, new).startswith("--- /dev/null\n")


def test_incompatible_check_names_subject_field_rule_and_version() -> None:
    plan = planned_schemas([retail])[0]
    problem = Incompatibility(
        error_type="TYPE_MISMATCH",
        field="price",
        location="/fields/1/type",
        description="the type of price changed",
        version=1,
        direction="BACKWARD",
    )
    check = SubjectCheck(
        plan, CheckStatus.INCOMPATIBLE, CompatibilityLevel.BACKWARD, 1, incompatibilities=(problem,)
    )
    assert check.describe() == [
        f"{plan.subject}: field 'price' breaks TYPE_MISMATCH against version 1: "
        "the type of price changed"
    ]
    assert SubjectCheck(plan, CheckStatus.NEW).describe() == [f"{plan.subject}: new"]


def test_register_plan_refuses_everything_when_any_subject_is_incompatible() -> None:
    first, second = planned_schemas([retail])[:2]
    checks = [SubjectCheck(first, CheckStatus.NEW), SubjectCheck(second, CheckStatus.INCOMPATIBLE)]
    with pytest.raises(
        SchemaRejectedError, match=f"nothing registered: 1 incompatible subject.*{second.subject}"
    ):
        register_plan(None, checks)  # type: ignore[arg-type]  # refused before any call


def test_registry_settings_render_client_config() -> None:
    anonymous = RegistryClientSettings(url="http://registry:8081", timeout_s=2.5)
    assert anonymous.client_config() == {"url": "http://registry:8081", "timeout": 2.5}
    secured = RegistryClientSettings(username="alice", password=SecretStr("s3cret:x"))
    assert secured.client_config()["basic.auth.user.info"] == "alice:s3cret:x"
    assert "s3cret" not in repr(secured)


def test_registry_settings_come_from_the_environment_with_arguments_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMFOLD_REGISTRY_URL", "http://from-env:8081")
    monkeypatch.setenv("STREAMFOLD_REGISTRY_USERNAME", "env-user")
    monkeypatch.setenv("STREAMFOLD_REGISTRY_PASSWORD", "env-pass")
    assert registry_settings().client_config() == {
        "url": "http://from-env:8081",
        "timeout": 10.0,
        "basic.auth.user.info": "env-user:env-pass",
    }
    given = registry_settings("http://given:1", password="given-pass").client_config()
    assert given["url"] == "http://given:1"
    assert given["basic.auth.user.info"] == "env-user:given-pass"
