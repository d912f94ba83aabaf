"""The chart's values, schema and settings agree with the code, without rendering anything."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamfold.deploy.values import CHART_OWNED_SETTINGS, GATEWAY_CHART_OWNED_SETTINGS
from streamfold.gateway.settings import AuthMode, GatewaySettings
from streamfold.observability.tracing import TracingSettings
from streamfold.registry.server import RegistryServerSettings
from streamfold.runtime.settings import TEST_HOOK_SETTINGS, WorkerSettings
from streamfold.state.rocksdb import RocksDBOptions

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[3] / "helm" / "streamfold"
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)


def _config_schema(section: str) -> dict[str, Any]:
    return dict(SCHEMA["properties"][section]["properties"]["config"]["properties"])


def test_workers_config_offers_every_worker_setting_the_chart_does_not_set() -> None:
    config = _config_schema("workers")
    offered = set(WorkerSettings.model_fields) - CHART_OWNED_SETTINGS - TEST_HOOK_SETTINGS
    assert set(config) == offered
    assert set(config["rocksdb"]["properties"]) == set(RocksDBOptions.model_fields)


#: Serving HTTPS inside the cluster: not a chart value yet (tests/integration/helm's
#: NOT_YET_IN_THE_CHART says why).
_TLS_SERVING = {"tls_certificate", "tls_key"}


def test_registry_config_offers_every_server_setting_but_port_and_basic_auth() -> None:
    assert set(_config_schema("registry")) == set(RegistryServerSettings.model_fields) - {
        "port",
        "basic_auth",
        *_TLS_SERVING,
    }


def test_gateway_config_offers_every_gateway_setting_the_chart_does_not_set() -> None:
    assert set(GatewaySettings.model_fields) >= GATEWAY_CHART_OWNED_SETTINGS
    offered = set(GatewaySettings.model_fields) - GATEWAY_CHART_OWNED_SETTINGS - _TLS_SERVING
    assert set(_config_schema("gateway")) == offered


def test_the_gateway_values_name_the_chart_owned_variables_they_become() -> None:
    gateway = SCHEMA["properties"]["gateway"]["properties"]
    assert gateway["containerPorts"]["properties"]["http"]["description"] == (
        "STREAMFOLD_GATEWAY_PORT"
    )
    assert gateway["auth"]["properties"]["mode"]["enum"] == [m.value for m in AuthMode]
    assert VALUES["gateway"]["auth"]["mode"] == AuthMode.OFF.value  # quoted: not YAML's false


def test_the_tracing_values_are_the_tracing_settings_one_to_one() -> None:
    tracing = SCHEMA["properties"]["tracing"]["properties"]
    fields = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): key for key in tracing}
    assert set(fields) == set(TracingSettings.model_fields)
    for field, key in fields.items():
        assert tracing[key]["description"] == f"STREAMFOLD_TRACING_{field.upper()}"
    assert tracing["otlpEndpoint"]["type"] == "string"
    assert (tracing["sampleRatio"]["type"], tracing["sampleRatio"]["minimum"]) == ("number", 0)
    assert tracing["sampleRatio"]["maximum"] == 1
    defaults = TracingSettings.model_fields
    assert VALUES["tracing"] == {"otlpEndpoint": "", "sampleRatio": 1.0}  # "": unset
    assert defaults["otlp_endpoint"].default is None
    assert defaults["sample_ratio"].default == VALUES["tracing"]["sampleRatio"]


def test_the_schema_refuses_a_sample_ratio_above_one() -> None:
    with pytest.raises(jsonschema.ValidationError, match=r"1\.5 is greater than the maximum of 1"):
        jsonschema.validate(_merge(VALUES, {"tracing": {"sampleRatio": 1.5}}), SCHEMA)


def test_each_gateway_config_key_has_the_settings_type() -> None:
    json_type = {int: "integer", float: "number", str: "string"}
    for key, spec in _config_schema("gateway").items():
        annotation = GatewaySettings.model_fields[key].annotation
        if annotation == tuple[str, ...]:
            assert (spec["type"], spec["items"]["type"]) == ("array", "string"), key
        elif annotation == str | None:
            assert spec["type"] == ["string", "null"], key
        else:
            assert spec["type"] == json_type[annotation], key  # type: ignore[index]
        assert spec["description"] == f"STREAMFOLD_GATEWAY_{key.upper()}"


def test_each_config_key_has_the_settings_type() -> None:
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for key, spec in _config_schema("workers").items():
        if key == "rocksdb":
            continue
        annotation = WorkerSettings.model_fields[key].annotation
        assert spec["type"] == json_type[annotation], key  # type: ignore[index]
        assert spec["description"] == f"STREAMFOLD_WORKER_{key.upper()}"


@pytest.mark.parametrize(
    "values",
    [CHART / "values.yaml", *sorted((CHART / "ci").glob("values-*.yaml"))],
    ids=lambda p: p.name,
)
def test_the_default_values_and_every_scenario_meet_the_schema(values: Path) -> None:
    merged = _merge(VALUES, yaml.safe_load(values.read_text()))
    jsonschema.validate(merged, SCHEMA)


def test_the_schema_refuses_a_misspelt_value() -> None:
    with pytest.raises(jsonschema.ValidationError, match="'replicacount' was unexpected"):
        jsonschema.validate(_merge(VALUES, {"registry": {"replicacount": 2}}), SCHEMA)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _leaves(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{path}.{k}" if path else k)]
    return [path]


def test_every_value_is_annotated_with_a_param() -> None:
    params = set(re.findall(r"^\s*## @param (\S+) ", VALUES_TEXT, flags=re.MULTILINE))
    undocumented = [
        leaf
        for leaf in _leaves(VALUES)
        if not any(leaf == p or leaf.startswith(f"{p}.") for p in params)
    ]
    assert not undocumented
    unknown = [
        p
        for p in params
        if not any(leaf == p or leaf.startswith(f"{p}.") for leaf in _leaves(VALUES))
    ]
    assert not unknown
