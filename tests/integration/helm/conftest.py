"""The chart's tests: the project's helm binary, rendering, and reading what was rendered."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfold.cli.edge import default_cache_dir
from streamfold.deploy.helm import ensure_helm
from streamfold.errors import HostEnvironmentError

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "streamfold"
SCENARIOS = sorted((CHART / "ci").glob("values-*.yaml"))
#: The Kubernetes version the chart is rendered for and validated against (a ``go install``
#: build of helm assumes v1.20 otherwise, below the chart's kubeVersion).
KUBE_VERSION = "1.33.0"
RELEASE = "shop"


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary scripts/test builds; built here if missing; a clear failure without Go."""
    try:
        return ensure_helm(default_cache_dir())
    except HostEnvironmentError as exc:
        pytest.fail(f"the chart's tests need helm: {exc}")


@dataclass(frozen=True)
class Rendered:
    """The manifests of one ``helm template``."""

    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {len(found)} found"
        return found[0]


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template(helm: Path, *values: Path, sets: tuple[str, ...] = ()) -> Rendered:
    args = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stderr
    return Rendered([d for d in yaml.safe_load_all(done.stdout) if d])


@pytest.fixture(scope="session")
def rendered_scenarios(helm: Path) -> dict[str, Rendered]:
    """Every ci/values-*.yaml scenario, rendered once for the session."""
    return {path.name: template(helm, path) for path in SCENARIOS}


def containers(rendered: Rendered) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every workload."""
    for workload in rendered.documents:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container


def resolved_env(
    container: dict[str, Any], pod_name: str, secret: Callable[[str, str], str] | None = None
) -> dict[str, str]:
    """The container's environment as the kubelet would give it to pod ``pod_name``
    (a secret's value is ``secret(name, key)``, by default ``<name>/<key>``)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", item
            env[item["name"]] = pod_name
        else:
            ref = source["secretKeyRef"]
            env[item["name"]] = (secret or (lambda n, k: f"{n}/{k}"))(ref["name"], ref["key"])
    return env
