"""``streamfold deploy render retail``, then ``helm template``: the workers a cluster would run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from tests.integration.helm.conftest import KUBE_VERSION, ROOT, Rendered, resolved_env, template

from streamfold.deploy.values import read_queries
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import TopologySpec, load_topology
from streamfold.runtime.worker import AggregateWorker
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration

RETAIL = ROOT / "topologies" / "retail" / "topology.yaml"


def deploy_render(output: Path, topology: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``streamfold deploy render <topology> -o <output> <args>``, from the repository."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamfold",
            "deploy",
            "render",
            topology,
            "-o",
            str(output),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def retail_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("render") / "retail-values.yaml"
    done = deploy_render(
        output,
        "retail",
        "--image",
        "registry.example.com/retail:1.0",
        "--bootstrap",
        "kafka:9092",
    )
    assert done.returncode == 0, done.stderr
    return output


@pytest.fixture(scope="module")
def retail(helm: Path, retail_values: Path) -> Rendered:
    return template(helm, retail_values)


def test_the_rendered_values_describe_the_topology(retail_values: Path) -> None:
    values = yaml.safe_load(retail_values.read_text())
    spec = load_topology(RETAIL)
    assert values["topology"]["partitions"] == spec.topics.partitions == 6
    (group,) = values["workers"]["groups"]
    assert group == {
        "name": "main",
        "topologyName": "retail",
        "aggregates": [
            "supplier",
            "item",
            "store_stock",
            "purchase_order",
            "purchase",
            "invoice",
        ],
        "sagas": ["replenishment", "purchase_flow"],
        "handlers": ["notify_customer"],
        "replicaCount": 3,
    }
    context = spec.load_context()
    assert group["aggregates"] == [a.name for a in spec.select(context)]
    assert group["sagas"] == [s.name for s in spec.select_sagas(context)]
    assert group["handlers"] == [h.name for h in spec.select_handlers(context)]
    assert values["workers"]["config"] == spec.worker
    (sink,) = values["sinks"]
    assert sink["connector"]["context"] == spec.context
    assert "target" not in sink["connector"]  # the chart's clickhouse.url
    assert values["gateway"] == {
        "enabled": True,
        "queries": read_queries(ROOT / "connectors" / "retail"),
    }
    assert values["image"] == {
        "registry": "registry.example.com",
        "repository": "retail",
        "tag": "1.0",
    }


def _pod_settings(
    statefulset: dict[str, Any], ordinal: int, monkeypatch: pytest.MonkeyPatch
) -> WorkerSettings:
    """The worker settings of pod ``ordinal``, from its environment as rendered."""
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    pod = f"{statefulset['metadata']['name']}-{ordinal}"
    for name in [n for n in os.environ if n.startswith("STREAMFOLD_")]:
        monkeypatch.delenv(name)
    for name, value in resolved_env(container, pod).items():
        monkeypatch.setenv(name, value)
    return WorkerSettings.resolve({})


def test_each_pod_has_a_stable_transactional_id_and_group_instance_id(
    retail: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (statefulset,) = retail.of_kind("StatefulSet")
    name = statefulset["metadata"]["name"]
    assert name == "shop-streamfold-worker-main"
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(retail.named("ConfigMap", f"{name}-topology")["data"]["topology.yaml"])
    topology = load_topology(topology_file)
    context = topology.load_context()
    retail_spec = load_topology(RETAIL)
    assert topology.select(context) == retail_spec.select(context)
    assert topology.select_sagas(context) == retail_spec.select_sagas(context)
    assert topology.select_handlers(context) == retail_spec.select_handlers(context)
    assert topology.group_id == retail_spec.group_id  # it continues `streamfold worker`'s
    ids = []
    for ordinal in range(statefulset["spec"]["replicas"]):
        settings = _pod_settings(statefulset, ordinal, monkeypatch)
        # The worker's own group id: <topic prefix>streamfold.<topology name>.
        worker = AggregateWorker(
            topology,
            topology.load_context(),
            settings,
            KafkaSettings(),
            codec=cast(Any, None),
            metrics=cast(Any, None),
        )
        transactional_id = f"{worker.group_id}.{settings.instance_id}"
        assert transactional_id == f"streamfold.retail.{name}-{ordinal}"
        assert settings.static_membership  # group.instance.id = instance_id
        assert settings.instance_id == f"{name}-{ordinal}"
        ids.append(transactional_id)
    assert len(set(ids)) == 3


def test_the_ids_do_not_change_between_renders(helm: Path, retail_values: Path) -> None:
    first, second = template(helm, retail_values), template(helm, retail_values)
    assert first.of_kind("StatefulSet") == second.of_kind("StatefulSet")


def test_each_pod_keeps_its_stores_on_its_own_claim(
    retail: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    (statefulset,) = retail.of_kind("StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    pod = statefulset["spec"]["template"]["spec"]
    assert "state" not in [v["name"] for v in pod["volumes"]]  # the claim, not a volume
    (container,) = pod["containers"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["state"]
    assert str(_pod_settings(statefulset, 0, monkeypatch).state_dir) == mount


def test_the_worker_pods_are_probed_scraped_sized_and_given_time_to_commit(
    retail: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    (statefulset,) = retail.of_kind("StatefulSet")
    pod = statefulset["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = _pod_settings(statefulset, 0, monkeypatch)
    (port,) = container["ports"]
    assert port == {
        "name": "http-metrics",
        "containerPort": settings.health_port,
        "protocol": "TCP",
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.health_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # worker_bench's RSS run: a 285 MB peak while restoring 1M aggregates.
    assert container["resources"]["requests"]["memory"] == "320Mi"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    # A transaction left open by SIGTERM is aborted by the broker after its timeout at most.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace * 1000 > settings.transaction_timeout_ms
    (budget,) = retail.of_kind("PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": statefulset["spec"]["selector"]}
    assert container["args"] == ["worker", "/etc/streamfold/topology/topology.yaml"]


def test_the_render_deploys_the_gateway_over_the_retail_connector(retail: Rendered) -> None:
    deployment = retail.named("Deployment", "shop-streamfold-gateway")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gateway", "/etc/streamfold/topology/topology.yaml"]
    connector = retail.named("ConfigMap", "shop-streamfold-gateway-connector")
    assert yaml.safe_load(connector["data"]["sink.yaml"])["name"] == "retail"


#: A topology over part of retail: the replenishment saga and the customer notifications.
PART = """\
name: shopfloor
context: topologies.retail.domain:retail
aggregates: [supplier, item, store_stock, purchase_order]
sagas: [replenishment]
handlers: [notify_customer]
topics:
  partitions: 4
"""


@pytest.fixture(scope="module")
def split(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Rendered]:
    """The part topology rendered in three groups: the saga with the orders, the handler alone."""
    directory = tmp_path_factory.mktemp("split")
    (directory / "topology.yaml").write_text(PART)
    output = directory / "values.yaml"
    done = deploy_render(
        output,
        str(directory / "topology.yaml"),
        "--group",
        "stock=store_stock,supplier,item",
        "--group",
        "orders=purchase_order,saga:replenishment",
        "--group",
        "notify=handler:notify_customer",
        "--replicas",
        "2",
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(output.read_text()), template(helm, output)


def _group_topologies(rendered: Rendered, tmp_path: Path) -> dict[str, TopologySpec]:
    """Each worker group's topology file, loaded as the worker loads it, by group."""
    loaded = {}
    for statefulset in rendered.of_kind("StatefulSet"):
        group = statefulset["metadata"]["labels"]["streamfold.io/workload"]
        volumes = statefulset["spec"]["template"]["spec"]["volumes"]
        (config_map,) = [v["configMap"]["name"] for v in volumes if v["name"] == "topology"]
        path = tmp_path / group / "topology.yaml"
        path.parent.mkdir()
        path.write_text(rendered.named("ConfigMap", config_map)["data"]["topology.yaml"])
        loaded[group] = load_topology(path)
    return loaded


def test_a_split_topology_places_its_saga_and_handler_in_their_groups(
    split: tuple[dict[str, Any], Rendered], tmp_path: Path
) -> None:
    values, rendered = split
    runs = {
        g["name"]: (g["aggregates"], g["sagas"], g["handlers"]) for g in values["workers"]["groups"]
    }
    assert runs == {
        "stock": (["store_stock", "supplier", "item"], [], []),
        "orders": (["purchase_order"], ["replenishment"], []),
        "notify": ([], [], ["notify_customer"]),
    }
    files = {
        c["metadata"]["name"]: c["data"]["topology.yaml"]
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["name"].startswith("shop-streamfold-worker-")
    }
    assert files["shop-streamfold-worker-orders-topology"] == (
        "name: shopfloor.orders\ncontext: topologies.retail.domain:retail\n"
        "aggregates:\n  - purchase_order\nsagas:\n  - replenishment\nhandlers: []\n"
        "topics:\n  partitions: 4\n"
    )
    assert (
        "aggregates: []\nsagas: []\nhandlers:\n  - notify_customer\n"
        in (files["shop-streamfold-worker-notify-topology"])
    )
    assert "sagas: []\nhandlers: []\n" in files["shop-streamfold-worker-stock-topology"]
    topologies = _group_topologies(rendered, tmp_path)
    found = {}
    for group, topology in topologies.items():
        context = topology.load_context()
        found[group] = (
            [a.name for a in topology.select(context)],
            [s.name for s in topology.select_sagas(context)],
            [h.name for h in topology.select_handlers(context)],
        )
    assert found == runs
    handler = topologies["notify"].select_handlers(topologies["notify"].load_context())[0]
    assert topologies["notify"].handler_group_id(handler) == (
        "streamfold.shopfloor.notify.handler.notify_customer"
    )


def test_the_saga_keeps_its_stores_on_claims_and_the_handler_keeps_its_pod_names(
    split: tuple[dict[str, Any], Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rendered = split
    statefulsets = {s["metadata"]["name"]: s for s in rendered.of_kind("StatefulSet")}
    assert set(statefulsets) == {
        "shop-streamfold-worker-stock",
        "shop-streamfold-worker-orders",
        "shop-streamfold-worker-notify",
    }
    orders = statefulsets["shop-streamfold-worker-orders"]
    (claim,) = orders["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    notify = statefulsets["shop-streamfold-worker-notify"]
    assert "volumeClaimTemplates" not in notify["spec"]  # a handler keeps no local state
    volumes = {v["name"]: v for v in notify["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    for ordinal in range(2):
        settings = _pod_settings(notify, ordinal, monkeypatch)
        assert settings.instance_id == f"shop-streamfold-worker-notify-{ordinal}"
        assert settings.static_membership


def test_the_split_manifests_validate_against_the_kubernetes_schemas(
    split: tuple[dict[str, Any], Rendered],
) -> None:
    _, rendered = split
    assert len(rendered.of_kind("StatefulSet")) == 3
    for document in rendered.documents:
        kubernetes_validate.validate(document, KUBE_VERSION, strict=True)


def test_a_saga_or_handler_the_topology_does_not_run_is_refused(tmp_path: Path) -> None:
    done = deploy_render(
        tmp_path / "values.yaml", "retail", "--group", "main=supplier,saga:restock"
    )
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "runs no saga 'restock' (it runs replenishment, purchase_flow)" in message, message
