"""The registry's state machine: deterministic, ids by log order, checks at apply time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfold.registry.state import RegistryState

pytestmark = pytest.mark.unit


def schema(*fields: tuple[str, str, Any]) -> str:
    rendered = []
    for name, kind, default in fields:
        field: dict[str, Any] = {"name": name, "type": kind}
        if default is not None:
            field["default"] = default
        rendered.append(field)
    return json.dumps({"type": "record", "name": "Thing", "fields": rendered})


BASE = schema(("id", "string", None))
WITH_NOTE = schema(("id", "string", None), ("note", "string", ""))
RETYPED = schema(("id", "long", None))


def register(subject: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"op": "register", "subject": subject, "schema": text, **extra}


def test_ids_are_allocated_in_log_order_and_shared_across_subjects() -> None:
    state = RegistryState()
    assert state.apply(register("a", BASE))["ok"]["id"] == 1
    assert state.apply(register("b", WITH_NOTE))["ok"]["id"] == 2
    shared = state.apply(register("c", json.dumps(json.loads(BASE), indent=2)))["ok"]
    assert (shared["id"], shared["version"]) == (1, 1)


def test_the_same_schema_again_returns_its_version_without_a_check() -> None:
    state = RegistryState()
    state.apply(register("a", BASE))
    state.apply({"op": "set_config", "subject": "a", "config": {"compatibility": "NONE"}})
    state.apply(register("a", RETYPED))
    state.apply({"op": "set_config", "subject": "a", "config": {"compatibility": "FULL"}})
    again = state.apply(register("a", BASE))["ok"]
    assert (again["id"], again["version"]) == (1, 1)


def test_an_incompatible_intent_is_refused_at_apply_time() -> None:
    state = RegistryState()
    state.apply(register("a", BASE))
    outcome = state.apply(register("a", RETYPED))
    assert outcome["error"]["error_code"] == 409
    assert "additionalInfo:'id'" in outcome["error"]["message"]
    assert [v.version for v in state.versions("a")] == [1]
    assert state.next_id == 2  # a refused intent allocates nothing


def test_invalid_schema_in_the_log_is_refused_identically() -> None:
    state = RegistryState()
    outcome = state.apply(register("a", '{"type": "record"}'))
    assert outcome["error"]["error_code"] == 42201
    assert state.apply({"op": "no-such-op"})["error"]["error_code"] == 400


def test_versions_continue_after_a_soft_deleted_version() -> None:
    state = RegistryState()
    state.apply(register("a", BASE))
    state.apply(register("a", WITH_NOTE))
    assert state.apply({"op": "delete_version", "subject": "a", "version": 2})["ok"] == 2
    assert state.apply(register("a", WITH_NOTE))["ok"]["version"] == 3


def test_import_mode_keeps_given_ids_and_refuses_a_clash() -> None:
    state = RegistryState()
    state.apply({"op": "set_mode", "subject": None, "mode": "IMPORT"})
    assert state.apply(register("a", BASE, id=40, version=3))["ok"]["id"] == 40
    clash = state.apply(register("b", WITH_NOTE, id=40))
    assert clash["error"]["error_code"] == 42205
    state.apply({"op": "set_mode", "subject": None, "mode": "READWRITE"})
    assert state.apply(register("c", WITH_NOTE))["ok"]["id"] == 41
    outside = state.apply(register("d", RETYPED, id=77))
    assert outside["error"]["error_code"] == 42205


POOL = [
    BASE,
    WITH_NOTE,
    RETYPED,
    schema(("id", "string", None), ("qty", "int", None)),
    schema(("id", "string", None), ("qty", "int", 0)),
    schema(("qty", "int", 0)),
]
INTENTS = st.one_of(
    st.builds(register, st.sampled_from(["a", "b", "c"]), st.sampled_from(POOL)),
    st.builds(
        lambda s, v, p: {"op": "delete_version", "subject": s, "version": v, "permanent": p},
        st.sampled_from(["a", "b", "c"]),
        st.integers(1, 4),
        st.booleans(),
    ),
    st.builds(
        lambda s, p: {"op": "delete_subject", "subject": s, "permanent": p},
        st.sampled_from(["a", "b", "c"]),
        st.booleans(),
    ),
    st.builds(
        lambda s, level: {"op": "set_config", "subject": s, "config": {"compatibility": level}},
        st.sampled_from(["a", "b", "c", None]),
        st.sampled_from(["NONE", "BACKWARD", "FORWARD_TRANSITIVE", "FULL"]),
    ),
)


@settings(max_examples=150)
@given(st.lists(INTENTS, max_size=30))
def test_replicas_applying_one_log_agree_and_keep_the_invariants(
    log: list[dict[str, Any]],
) -> None:
    first, second = RegistryState(), RegistryState()
    for intent in log:
        assert first.apply(intent) == second.apply(intent)
    ids: dict[str, int] = {}
    for entry in first.schemas.values():
        assert ids.setdefault(entry.key, entry.schema_id) == entry.schema_id
    assert len(set(ids.values())) == len(ids)
    for name, subject in first.subjects.items():
        numbers = list(subject.versions)
        assert numbers == sorted(set(numbers))
        assert [(v.version, v.schema_id, v.deleted) for v in subject.versions.values()] == [
            (v.version, v.schema_id, v.deleted) for v in second.subjects[name].versions.values()
        ]
