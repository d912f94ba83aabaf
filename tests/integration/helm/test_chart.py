"""The chart lints, renders and validates against the Kubernetes schemas in every scenario."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from tests.integration.helm.conftest import (
    CHART,
    KUBE_VERSION,
    SCENARIOS,
    Rendered,
    containers,
    resolved_env,
    run_helm,
    template,
)

from streamfold.runtime.topology import load_topology
from streamfold.sink.spec import load_connector

pytestmark = pytest.mark.integration

#: Custom resources the Kubernetes schemas do not hold; each is checked by its own test.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def test_the_ci_scenarios_are_the_four_the_chart_promises() -> None:
    assert [p.name for p in SCENARIOS] == [
        "values-minimal.yaml",
        "values-production.yaml",
        "values-registry-off.yaml",
        "values-worker-groups.yaml",
    ]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_helm_lint_strict_passes(helm: Path, scenario: Path) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(scenario))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    rendered_scenarios: dict[str, Rendered], scenario: Path
) -> None:
    rendered = rendered_scenarios[scenario.name]
    assert rendered.of_kind("StatefulSet"), "no worker rendered"
    for document in rendered.documents:
        if (document["apiVersion"], document["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, KUBE_VERSION, strict=True)


def test_the_validator_refuses_a_wrong_manifest_offline(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    statefulset = rendered_scenarios["values-minimal.yaml"].of_kind("StatefulSet")[0]
    wrong = copy.deepcopy(statefulset)
    wrong["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(wrong, KUBE_VERSION, strict=True)
    wrong = copy.deepcopy(statefulset)
    wrong["spec"]["replicas"] = "3"
    with pytest.raises(kubernetes_validate.ValidationError, match="is not of type"):
        kubernetes_validate.validate(wrong, KUBE_VERSION, strict=True)


def test_the_service_monitor_scrapes_the_worker_sink_and_gateway_services(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["values-production.yaml"]
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    endpoints = monitor["spec"]["endpoints"]
    assert endpoints == [
        {"port": "http-metrics", "path": "/metrics", "interval": "30s"},
        {"port": "http", "path": "/metrics", "interval": "30s"},  # the gateway's API port
    ]
    selector = monitor["spec"]["selector"]
    scraped = [s for s in rendered.of_kind("Service") if _selects(selector, s)]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped) == [
        "gateway",
        "sink",
        "worker",
    ]
    for service in scraped:
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert ports & {e["port"] for e in endpoints}
    assert not rendered_scenarios["values-minimal.yaml"].of_kind("ServiceMonitor")


def _selects(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    labels = obj["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_selectors_use_only_the_immutable_labels(
    rendered_scenarios: dict[str, Rendered], scenario: Path
) -> None:
    rendered = rendered_scenarios[scenario.name]
    for kind in ("StatefulSet", "Deployment", "PodDisruptionBudget"):
        for obj in rendered.of_kind(kind):
            match = obj["spec"]["selector"]["matchLabels"]
            assert "app.kubernetes.io/version" not in match
            assert "helm.sh/chart" not in match
            assert {"app.kubernetes.io/name", "app.kubernetes.io/instance"} <= set(match)
            if kind != "PodDisruptionBudget":
                pod_labels = obj["spec"]["template"]["metadata"]["labels"]
                assert match.items() <= pod_labels.items()
    for _, container in containers(rendered):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_a_wrong_type_is_refused_by_the_schema_with_the_path_and_the_type(
    helm: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "values-bad.yaml"
    bad.write_text(
        "workers:\n  groups:\n    - name: main\n      aggregates: []\n      replicaCount: three\n"
    )
    for command in ("lint", "template"):
        args = [command, *(["--strict"] if command == "lint" else ["t"]), str(CHART)]
        done = run_helm(helm, *args, "-f", str(bad), "--kube-version", KUBE_VERSION)
        assert done.returncode != 0, command
        assert "at '/workers/groups/0/replicaCount': got string, want integer" in (
            done.stdout + done.stderr
        ), command


def test_an_unknown_worker_setting_is_refused_by_the_schema(helm: Path) -> None:
    done = run_helm(
        helm, "template", "t", str(CHART), "--set", "workers.config.commit_intervall_ms=5"
    )
    assert done.returncode != 0
    assert "commit_intervall_ms" in done.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("registry.enabled=false",), "registry.enabled is false: set registryClient.url"),
        (("kafka.securityProtocol=SASL_SSL",), "SASL_SSL needs kafka.sasl.mechanism"),
        (("kafka.tls.certFilename=tls.crt",), "certFilename and kafka.tls.keyFilename go together"),
    ],
)
def test_values_that_could_not_run_are_refused_with_what_to_set(
    helm: Path, sets: tuple[str, ...], message: str
) -> None:
    args = ["template", "t", str(CHART), "--kube-version", KUBE_VERSION]
    for item in sets:
        args += ["--set", item]
    done = run_helm(helm, *args)
    assert done.returncode != 0
    assert message in done.stderr


def test_fullname_is_truncated_to_63_characters(helm: Path) -> None:
    rendered = template(helm, sets=("fullnameOverride=" + "x" * 80,))
    for document in rendered.documents:
        assert len(document["metadata"]["name"]) <= 63, document["metadata"]["name"]
    for statefulset in rendered.of_kind("StatefulSet"):
        # The controller-revision-hash label is the name plus 11 characters.
        assert len(statefulset["metadata"]["name"]) <= 52


def test_the_registry_off_scenario_points_at_the_given_registry(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["values-registry-off.yaml"]
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in rendered.of_kind("Deployment")
    }
    assert components == {"sink"}
    for _, container in containers(rendered):
        env = {e["name"]: e for e in container["env"]}
        assert env["STREAMFOLD_REGISTRY_URL"]["value"] == "https://schema-registry.example.com"
        assert env["STREAMFOLD_REGISTRY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "shop-streamfold",
            "key": "registry-password",
        }
    (secret,) = rendered.of_kind("Secret")
    assert set(secret["data"]) == {"registry-password", "clickhouse-password"}


def test_production_takes_every_credential_from_existing_secrets(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["values-production.yaml"]
    assert not rendered.of_kind("Secret")
    refs = {}
    for _, container in containers(rendered):
        for item in container["env"]:
            if "secretKeyRef" in item.get("valueFrom", {}):
                refs[item["name"]] = item["valueFrom"]["secretKeyRef"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["kafka-tls"] == "/etc/streamfold/kafka-tls"
    assert refs == {
        "STREAMFOLD_KAFKA_SASL_PASSWORD": {"name": "retail-kafka-sasl", "key": "password"},
        "STREAMFOLD_KAFKA_SSL_KEY_PASSWORD": {
            "name": "retail-kafka-tls",
            "key": "tls.key.password",
        },
        "STREAMFOLD_REGISTRY_PASSWORD": {"name": "retail-registry-client", "key": "password"},
        "STREAMFOLD_SINK_PASSWORD": {"name": "retail-clickhouse", "key": "password"},
        "STREAMFOLD_GATEWAY_CLICKHOUSE_PASSWORD": {"name": "retail-clickhouse", "key": "password"},
        "STREAMFOLD_REGISTRY_SERVER_BASIC_AUTH": {"name": "retail-registry-users", "key": "users"},
    }


def test_several_worker_groups_each_get_a_statefulset_a_topology_and_a_budget(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["values-worker-groups.yaml"]
    statefulsets = {s["metadata"]["name"]: s for s in rendered.of_kind("StatefulSet")}
    assert {name: s["spec"]["replicas"] for name, s in statefulsets.items()} == {
        "shop-streamfold-worker-stock": 6,
        "shop-streamfold-worker-catalog": 2,
        "shop-streamfold-worker-orders": 3,
        "shop-streamfold-worker-notify": 2,
    }
    topologies = {
        c["metadata"]["name"]: c["data"]["topology.yaml"]
        for c in rendered.of_kind("ConfigMap")
        if "topology.yaml" in c["data"]
    }
    assert topologies["shop-streamfold-worker-stock-topology"].startswith(
        "name: retail.stock\ncontext: topologies.retail.domain:retail\n"
        "aggregates:\n  - store_stock\nsagas: []\nhandlers: []\n"
    )
    assert "  - supplier\n  - item\n" in topologies["shop-streamfold-worker-catalog-topology"]
    assert (
        "aggregates:\n  - purchase_order\n  - purchase\n  - invoice\n"
        "sagas:\n  - replenishment\n  - purchase_flow\nhandlers: []\n"
    ) in topologies["shop-streamfold-worker-orders-topology"]
    # A group that leaves lists out gets them as []: it never falls back to "everything".
    assert (
        "aggregates: []\nsagas: []\nhandlers:\n  - notify_customer\n"
        in (topologies["shop-streamfold-worker-notify-topology"])
    )
    budgets = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("PodDisruptionBudget")}
    for name, statefulset in statefulsets.items():
        assert budgets[name]["maxUnavailable"] == 1
        assert budgets[name]["selector"] == statefulset["spec"]["selector"]
    stock = statefulsets["shop-streamfold-worker-stock"]["spec"]
    env = {e["name"]: e.get("value") for e in stock["template"]["spec"]["containers"][0]["env"]}
    assert env["STREAMFOLD_WORKER_MAX_BATCH"] == "2000"  # the group's own config
    assert env["STREAMFOLD_WORKER_COMMIT_INTERVAL_MS"] == "50"  # every group's
    assert env["STREAMFOLD_WORKER_ROCKSDB__BLOCK_CACHE_MB"] == "256"
    (claim,) = stock["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    # The sagas' stores are on claims as the aggregates' are; the handler keeps no state.
    assert statefulsets["shop-streamfold-worker-orders"]["spec"]["volumeClaimTemplates"]
    notify = statefulsets["shop-streamfold-worker-notify"]["spec"]
    assert "volumeClaimTemplates" not in notify
    volumes = {v["name"]: v for v in notify["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    assert notify["serviceName"] == "shop-streamfold-worker-notify-headless"  # stable pod names


def test_a_group_with_no_lists_runs_everything_of_the_context(
    rendered_scenarios: dict[str, Rendered], tmp_path: Path
) -> None:
    rendered = rendered_scenarios["values-minimal.yaml"]
    (statefulset,) = rendered.of_kind("StatefulSet")
    name = statefulset["metadata"]["name"]
    text = rendered.named("ConfigMap", f"{name}-topology")["data"]["topology.yaml"]
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    topology = load_topology(path)
    context = topology.load_context()
    assert (topology.aggregates, topology.sagas, topology.handlers) == (None, None, None)
    assert [s.name for s in topology.select_sagas(context)] == [s.name for s in context.sagas]
    assert [h.name for h in topology.select_handlers(context)] == [h.name for h in context.handlers]
    assert statefulset["spec"]["volumeClaimTemplates"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            "    - name: main\n      aggregates: []\n",
            'group "main" runs nothing: list its aggregates, sagas or handlers',
        ),
        (
            "    - name: a\n      aggregates: [item]\n      sagas: [replenishment]\n"
            "    - name: b\n      sagas: [replenishment]\n",
            'saga "replenishment" is in groups "a" and "b": put it in one',
        ),
        (
            "    - name: a\n      handlers: [notify_customer]\n"
            "    - name: b\n      aggregates: [item]\n      handlers: [notify_customer]\n",
            'handler "notify_customer" is in groups "a" and "b"',
        ),
        (
            "    - name: a\n    - name: b\n      aggregates: [item]\n",
            'group "a" names no aggregates, sagas or handlers, so it runs everything',
        ),
    ],
)
def test_groups_that_would_run_nothing_or_twice_are_refused(
    helm: Path, tmp_path: Path, groups: str, message: str
) -> None:
    bad = tmp_path / "values-bad.yaml"
    bad.write_text("workers:\n  groups:\n" + groups)
    done = run_helm(
        helm, "template", "t", str(CHART), "-f", str(bad), "--kube-version", KUBE_VERSION
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_the_mounted_files_load_as_the_processes_load_them(
    rendered_scenarios: dict[str, Rendered], scenario: Path, tmp_path: Path
) -> None:
    rendered = rendered_scenarios[scenario.name]
    for workload, container in containers(rendered):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        args = container["args"]
        if args[0] == "worker":
            config_map = rendered.named("ConfigMap", volumes["topology"]["configMap"]["name"])
            path = tmp_path / workload["metadata"]["name"] / "topology.yaml"
            path.parent.mkdir()
            path.write_text(config_map["data"]["topology.yaml"])
            assert args[1] == "/etc/streamfold/topology/topology.yaml"
            topology = load_topology(path)
            context = topology.load_context()
            assert (
                topology.select(context)
                or topology.select_sagas(context)
                or topology.select_handlers(context)
            )
        elif args[0] == "sink":
            config_map = rendered.named("ConfigMap", volumes["connector"]["configMap"]["name"])
            path = tmp_path / workload["metadata"]["name"] / "sink.yaml"
            path.parent.mkdir()
            path.write_text(config_map["data"]["sink.yaml"])
            assert args[1] == "/etc/streamfold/connector/sink.yaml"
            target = args[args.index("--target") + 1]
            env = resolved_env(container, "retail-sink-7d9f-x2k4p")
            spec = load_connector(
                path, target=target, instance_id=env["STREAMFOLD_SINK_INSTANCE_ID"]
            )
            assert spec.select(spec.load_context())
            # Static membership per pod: a restarted container takes its partitions back.
            assert spec.instance_id == "retail-sink-7d9f-x2k4p"
        elif args[0] == "gateway":
            topology_map = rendered.named("ConfigMap", volumes["topology"]["configMap"]["name"])
            connector_map = rendered.named("ConfigMap", volumes["connector"]["configMap"]["name"])
            directory = tmp_path / workload["metadata"]["name"]
            (directory / "connector").mkdir(parents=True)
            (directory / "topology.yaml").write_text(topology_map["data"]["topology.yaml"])
            topology = load_topology(directory / "topology.yaml")
            assert topology.select(topology.load_context())
            for item in volumes["connector"]["configMap"]["items"]:
                file = directory / "connector" / item["path"]
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(connector_map["data"][item["key"]])
            env = {e["name"]: e.get("value") for e in container["env"]}
            target = env["STREAMFOLD_GATEWAY_CLICKHOUSE_TARGET"]
            spec = load_connector(directory / "connector", target=target)
            assert spec.context == topology.context


def test_every_workload_listens_on_all_interfaces_only_because_the_chart_says_so(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    """The processes bind 127.0.0.1 by default; in a pod, probes and Services come from
    outside, so the chart sets 0.0.0.0 on each listener itself."""
    for scenario, rendered in rendered_scenarios.items():
        for workload, container in containers(rendered):
            env = resolved_env(container, "pod-0")
            args = container.get("args", [])
            component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
            if args[:1] == ["worker"]:
                assert env["STREAMFOLD_WORKER_HEALTH_HOST"] == "0.0.0.0", scenario
            elif args[:1] == ["sink"]:
                assert args[args.index("--health-host") + 1] == "0.0.0.0", scenario
            elif component == "registry":
                assert env["STREAMFOLD_REGISTRY_SERVER_HOST"] == "0.0.0.0", scenario
            else:
                assert component == "gateway", (scenario, component)
                assert env["STREAMFOLD_GATEWAY_HOST"] == "0.0.0.0", scenario
