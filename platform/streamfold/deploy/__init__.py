"""Deploying topologies to Kubernetes: Helm values from a topology, and the helm binary."""

from __future__ import annotations

from streamfold.deploy.helm import HELM_VERSION, ensure_helm, helm_path
from streamfold.deploy.values import WorkerGroup, parse_group, render_values

__all__ = [
    "HELM_VERSION",
    "WorkerGroup",
    "ensure_helm",
    "helm_path",
    "parse_group",
    "render_values",
]
