"""The helm binary: found in the cache, else built with Go, else a clear error."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamfold.deploy.helm import HELM_VERSION, ensure_helm, helm_path
from streamfold.errors import HostEnvironmentError

pytestmark = pytest.mark.unit


def _fake_helm(cache: Path, version: str) -> Path:
    binary = helm_path(cache)
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\nprintf '{version}'\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


@pytest.mark.parametrize("reported", [HELM_VERSION, HELM_VERSION.rsplit(".", 1)[0]])
def test_the_cached_binary_of_the_version_is_used(tmp_path: Path, reported: str) -> None:
    binary = _fake_helm(tmp_path, reported)
    assert ensure_helm(tmp_path) == binary


def test_without_go_a_missing_helm_is_an_error_that_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_helm(tmp_path, "v3.11.0")  # another version: not used
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(HostEnvironmentError) as caught:
        ensure_helm(tmp_path)
    message = str(caught.value)
    assert f"helm {HELM_VERSION} is not in {tmp_path / 'bin'}" in message
    assert "install Go 1.26 or newer" in message
