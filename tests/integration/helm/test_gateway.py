"""The command gateway's resources: a Deployment and Service by default, an HPA, an Ingress and
its auth Secret when asked for, and a refusal of auth without credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.integration.helm.conftest import CHART, KUBE_VERSION, Rendered, run_helm, template

pytestmark = pytest.mark.integration

GATEWAY = "shop-streamfold-gateway"


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _volumes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_the_default_render_serves_the_gateway_probed_on_its_port(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["values-minimal.yaml"]
    deployment = rendered.named("Deployment", GATEWAY)
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "gateway"
    container = _container(deployment)
    assert container["args"] == ["gateway", "/etc/streamfold/topology/topology.yaml"]
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STREAMFOLD_GATEWAY_HOST"] == "0.0.0.0"
    assert env["STREAMFOLD_GATEWAY_PORT"] == "8080"
    assert env["STREAMFOLD_GATEWAY_AUTH"] == "off"
    assert env["STREAMFOLD_GATEWAY_CONNECTORS_DIR"] == "/etc/streamfold/connector"
    assert "gateway-auth" not in _volumes(deployment)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8080"
    service = rendered.named("Service", GATEWAY)
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert not rendered.of_kind("HorizontalPodAutoscaler")
    assert not rendered.of_kind("Ingress")


def test_the_gateway_can_be_left_out(rendered_scenarios: dict[str, Rendered]) -> None:
    rendered = rendered_scenarios["values-registry-off.yaml"]
    assert not [
        d
        for d in rendered.documents
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
    ]


def test_production_autoscales_the_gateway_behind_an_ingress_with_tls(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["values-production.yaml"]
    deployment = rendered.named("Deployment", GATEWAY)
    assert "replicas" not in deployment["spec"]  # the HPA's
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": GATEWAY,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    (ingress,) = rendered.of_kind("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "retail-gateway-tls", "hosts": ["api.retail.example.com"]}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "api.retail.example.com"
    (path,) = rule["http"]["paths"]
    assert path["backend"] == {"service": {"name": GATEWAY, "port": {"name": "http"}}}
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"


def test_auth_jwt_mounts_the_public_key_from_the_existing_secret(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    deployment = rendered_scenarios["values-production.yaml"].named("Deployment", GATEWAY)
    container = _container(deployment)
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMFOLD_GATEWAY_AUTH"]["value"] == "jwt"
    assert env["STREAMFOLD_GATEWAY_JWT_PUBLIC_KEY_FILE"]["value"] == (
        "/etc/streamfold/gateway-auth/jwt-public-key.pem"
    )
    assert env["STREAMFOLD_GATEWAY_JWT_ALGORITHMS"]["value"] == '["RS256"]'
    assert "STREAMFOLD_GATEWAY_API_KEYS_FILE" not in env
    assert "STREAMFOLD_GATEWAY_JWT_SECRET" not in env  # no jwtSecretKey: RS256 only
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["gateway-auth"] == {
        "name": "gateway-auth",
        "mountPath": "/etc/streamfold/gateway-auth",
        "readOnly": True,
    }
    assert _volumes(deployment)["gateway-auth"]["secret"] == {
        "secretName": "retail-gateway-auth",
        "defaultMode": 0o440,
        "items": [{"key": "jwt.pub", "path": "jwt-public-key.pem"}],
    }


def test_auth_jwt_with_an_hmac_secret_reads_it_from_the_secret(helm: Path) -> None:
    rendered = template(
        helm,
        sets=(
            "gateway.auth.mode=jwt",
            "gateway.auth.existingSecret=gateway-jwt",
            "gateway.auth.jwtSecretKey=hmac",
        ),
    )
    deployment = rendered.named("Deployment", GATEWAY)
    env = {e["name"]: e for e in _container(deployment)["env"]}
    assert env["STREAMFOLD_GATEWAY_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "gateway-jwt",
        "key": "hmac",
    }
    assert "STREAMFOLD_GATEWAY_JWT_PUBLIC_KEY_FILE" not in env
    assert "gateway-auth" not in _volumes(deployment)  # no file to mount


def test_auth_api_key_mounts_the_keys_file(helm: Path) -> None:
    rendered = template(
        helm, sets=("gateway.auth.mode=api_key", "gateway.auth.existingSecret=gateway-keys")
    )
    deployment = rendered.named("Deployment", GATEWAY)
    env = {e["name"]: e.get("value") for e in _container(deployment)["env"]}
    assert env["STREAMFOLD_GATEWAY_AUTH"] == "api_key"
    assert env["STREAMFOLD_GATEWAY_API_KEYS_FILE"] == "/etc/streamfold/gateway-auth/api-keys"
    assert _volumes(deployment)["gateway-auth"]["secret"]["items"] == [
        {"key": "api-keys", "path": "api-keys"}
    ]


def test_replicas_are_set_unless_autoscaled(helm: Path) -> None:
    rendered = template(helm, sets=("gateway.replicaCount=4",))
    assert rendered.named("Deployment", GATEWAY)["spec"]["replicas"] == 4
    rendered = template(helm, sets=("gateway.autoscaling.enabled=true",))
    assert "replicas" not in rendered.named("Deployment", GATEWAY)["spec"]
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert not rendered.of_kind("Ingress")


def test_an_ingress_without_tls_or_host_routes_everything_to_the_gateway(
    helm: Path, tmp_path: Path
) -> None:
    values = tmp_path / "values-ingress.yaml"
    values.write_text(
        yaml.safe_dump(
            {"gateway": {"ingress": {"enabled": True, "hosts": [{"paths": [{"path": "/"}]}]}}}
        )
    )
    (ingress,) = template(helm, values).of_kind("Ingress")
    assert "tls" not in ingress["spec"]
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule
    assert rule["http"]["paths"][0]["pathType"] == "Prefix"
    kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)


def test_the_topology_file_holds_every_aggregate_some_group_runs(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    groups = rendered_scenarios["values-worker-groups.yaml"]
    topology = yaml.safe_load(
        groups.named("ConfigMap", f"{GATEWAY}-topology")["data"]["topology.yaml"]
    )
    assert topology == {
        "name": "retail",
        "context": "topologies.retail.domain:retail",
        "aggregates": ["store_stock", "supplier", "item", "purchase_order", "purchase", "invoice"],
        "sagas": [],  # the gateway runs none: it only sends commands
        "handlers": [],
        "topics": {"partitions": 6},
    }
    minimal = rendered_scenarios["values-minimal.yaml"]
    topology = yaml.safe_load(
        minimal.named("ConfigMap", f"{GATEWAY}-topology")["data"]["topology.yaml"]
    )
    assert "aggregates" not in topology  # the group runs every aggregate


def test_the_connector_directory_holds_the_chosen_sink_and_the_queries(
    helm: Path, tmp_path: Path
) -> None:
    values = tmp_path / "values-queries.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "sinks": [
                    {"name": "retail", "connector": {"name": "retail", "context": "a.b:c"}},
                    {
                        "name": "audit",
                        "connector": {"name": "audit", "context": "a.b:c", "username": "ro"},
                    },
                ],
                "gateway": {
                    "connector": "audit",
                    "queries": {"low_stock": "SELECT 1\n", "top_items": "SELECT 2"},
                },
            }
        )
    )
    rendered = template(helm, values)
    config_map = rendered.named("ConfigMap", f"{GATEWAY}-connector")
    assert yaml.safe_load(config_map["data"]["sink.yaml"])["name"] == "audit"
    assert config_map["data"]["low_stock.sql"] == "SELECT 1\n"
    deployment = rendered.named("Deployment", GATEWAY)
    assert _volumes(deployment)["connector"]["configMap"]["items"] == [
        {"key": "sink.yaml", "path": "sink.yaml"},
        {"key": "low_stock.sql", "path": "queries/low_stock.sql"},
        {"key": "top_items.sql", "path": "queries/top_items.sql"},
    ]
    env = {e["name"]: e.get("value") for e in _container(deployment)["env"]}
    assert env["STREAMFOLD_GATEWAY_CLICKHOUSE_USERNAME"] == "ro"
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/connector"]
    changed = template(helm, values, sets=("gateway.queries.low_stock=SELECT 3",))
    annotations = changed.named("Deployment", GATEWAY)["spec"]["template"]["metadata"]
    assert annotations["annotations"]["checksum/connector"] != checksum  # a rollout


def test_without_sinks_the_gateway_reads_no_clickhouse(helm: Path) -> None:
    rendered = template(helm)  # the chart's defaults: no sink
    deployment = rendered.named("Deployment", GATEWAY)
    env = {e["name"] for e in _container(deployment)["env"]}
    assert not {n for n in env if n.startswith("STREAMFOLD_GATEWAY_CLICKHOUSE_")}
    assert "items" not in _volumes(deployment)["connector"]["configMap"]
    assert rendered.named("ConfigMap", f"{GATEWAY}-connector")["data"] == {}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("gateway.auth.mode=jwt",),
            "gateway.auth.mode jwt needs gateway.auth.existingSecret: the Secret holding",
        ),
        (
            ("gateway.auth.mode=api_key",),
            "gateway.auth.mode api_key needs gateway.auth.existingSecret: the Secret holding"
            " the gateway's API keys",
        ),
        (
            ("gateway.auth.mode=jwt", "gateway.auth.existingSecret=s"),
            "gateway.auth.mode jwt needs gateway.auth.jwtPublicKeyKey (RS256/ES256) or"
            " gateway.auth.jwtSecretKey (HS256)",
        ),
        (("gateway.connector=nope",), 'gateway.connector "nope" is not the name of a sink'),
        (
            ("gateway.autoscaling.enabled=true", "gateway.autoscaling.minReplicas=11"),
            "gateway.autoscaling.minReplicas is above gateway.autoscaling.maxReplicas",
        ),
        (("gateway.auth.mode=token",), "at '/gateway/auth/mode': value must be one of"),
    ],
)
def test_gateway_values_that_could_not_run_are_refused(
    helm: Path, sets: tuple[str, ...], message: str
) -> None:
    args = ["template", "t", str(CHART), "--kube-version", KUBE_VERSION]
    for item in sets:
        args += ["--set", item]
    done = run_helm(helm, *args)
    assert done.returncode != 0
    assert message in done.stderr


def test_auth_off_needs_no_secret(helm: Path) -> None:
    rendered = template(helm, sets=("gateway.auth.existingSecret=unused",))
    assert "gateway-auth" not in _volumes(rendered.named("Deployment", GATEWAY))
