"""``streamfold deploy render retail``, then ``helm template``: the workers a cluster would run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from tests.integration.helm.conftest import ROOT, Rendered, resolved_env, template

from streamfold.deploy.values import read_queries
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import load_topology
from streamfold.runtime.worker import AggregateWorker
from streamfold.transport.settings import KafkaSettings

pytestmark = pytest.mark.integration

RETAIL = ROOT / "topologies" / "retail" / "topology.yaml"


@pytest.fixture(scope="module")
def retail_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("render") / "retail-values.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamfold",
            "deploy",
            "render",
            "retail",
            "-o",
            str(output),
            "--image",
            "registry.example.com/retail:1.0",
            "--bootstrap",
            "kafka:9092",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
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
        "aggregates": ["supplier", "item", "store_stock"],
        "replicaCount": 3,
    }
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
    assert topology.select(topology.load_context()) == load_topology(RETAIL).select(
        topology.load_context()
    )
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
    # benchmarks/reports/worker.md: RSS peak 196 MB with 1M aggregates.
    assert container["resources"]["requests"]["memory"] == "256Mi"
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
