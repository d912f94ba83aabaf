"""The helm binary the project uses: built from its Go module into the streamfold cache.

``go install helm.sh/helm/v3/cmd/helm@<HELM_VERSION>`` with ``GOBIN=<cache>/bin`` (about two
minutes the first time, then cached). ``scripts/setup`` and the chart's tests call
:func:`ensure_helm`, so both use the same binary; without Go it fails with what to install
instead of leaving the tests to skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from streamfold.errors import HostEnvironmentError

__all__ = ["HELM_VERSION", "ensure_helm", "helm_path"]

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
#: A ``go install`` build reports its version without the patch number ("v3.22").
_REPORTED = HELM_VERSION.rsplit(".", 1)[0]


def helm_path(cache_dir: Path) -> Path:
    """Where :func:`ensure_helm` puts the binary."""
    return cache_dir / "bin" / "helm"


def _installed_version(binary: Path) -> str | None:
    try:
        done = subprocess.run(
            [str(binary), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_helm(cache_dir: Path) -> Path:
    """The helm binary of :data:`HELM_VERSION`, built with Go into ``cache_dir/bin`` if missing."""
    binary = helm_path(cache_dir)
    version = _installed_version(binary) if binary.exists() else None
    if version in (HELM_VERSION, _REPORTED):
        return binary
    go = shutil.which("go")
    if go is None:
        raise HostEnvironmentError(
            f"helm {HELM_VERSION} is not in {binary.parent} and Go is not installed to build it:"
            " install Go 1.26 or newer (https://go.dev/dl), then run scripts/setup"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "install", f"{HELM_MODULE}@{HELM_VERSION}"],
        env={**os.environ, "GOBIN": str(binary.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise HostEnvironmentError(
            f"could not build helm {HELM_VERSION} with {go}: " + " | ".join(tail)
        )
    return binary
