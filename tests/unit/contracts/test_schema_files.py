"""The checked-in schemas/ tree: fresh, reproducible, and managed by the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from topologies.retail import retail
from typer.testing import CliRunner

from streamfold.cli.schemas import app
from streamfold.contracts.schema_files import (
    discover_contexts,
    load_contexts,
    render_schema_files,
    stale_schema_files,
    write_schema_files,
)
from streamfold.domain import BoundedContext
from streamfold.errors import ConfigurationError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_checked_in_schemas_are_fresh() -> None:
    problems = stale_schema_files(discover_contexts(), REPO / "schemas")
    assert not problems, (
        "schemas/ is stale; run `streamfold schemas generate` and commit the result:\n  "
        + "\n  ".join(problems)
    )


def test_every_retail_message_has_a_schema() -> None:
    files = render_schema_files([retail])
    expected = {*retail.commands(), *retail.events(), *retail.states()}
    assert set(files) == {f"retail/{m.__name__}.avsc" for m in expected}
    assert list(files) == sorted(files)


def test_write_then_check(tmp_path: Path) -> None:
    assert "missing retail/RecordSale.avsc" in stale_schema_files([retail], tmp_path)
    write_schema_files([retail], tmp_path)
    assert stale_schema_files([retail], tmp_path) == []

    (tmp_path / "retail" / "Gone.avsc").write_text("{}\n")
    (tmp_path / "retail" / "Item.avsc").write_text("{}\n")
    assert stale_schema_files([retail], tmp_path) == [
        "changed retail/Item.avsc",
        "extra retail/Gone.avsc",
    ]
    assert write_schema_files([retail], tmp_path) == [
        "changed retail/Item.avsc",
        "extra retail/Gone.avsc",
    ]
    assert not (tmp_path / "retail" / "Gone.avsc").exists()
    assert stale_schema_files([retail], tmp_path) == []


def test_cli_generate_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["generate", "--context", "topologies.retail:retail", "--out", str(tmp_path)]
    stale = runner.invoke(app, [*args, "--check"])
    assert stale.exit_code == 1 and "missing retail/AddItem.avsc" in stale.output
    written = runner.invoke(app, args)
    assert written.exit_code == 0 and "change(s)" in written.output
    fresh = runner.invoke(app, [*args, "--check"])
    assert fresh.exit_code == 0 and "up to date (retail)" in fresh.output


def test_cli_default_discovers_topologies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, ["generate", "--check", "--out", str(REPO / "schemas")])
    assert result.exit_code == 0, result.output


def test_cli_without_contexts_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "-c", "json", "--out", str(tmp_path)])
    assert result.exit_code == 1


def test_load_contexts_specs() -> None:
    assert load_contexts(["topologies.retail:retail", "topologies.retail"]) == [retail]
    with pytest.raises(
        ConfigurationError, match=r"cannot import 'nope\.mod' \(from 'nope\.mod:x'\)"
    ):
        load_contexts(["nope.mod:x"])
    with pytest.raises(ConfigurationError, match="is not a BoundedContext"):
        load_contexts(["topologies.retail:stock"])
    with pytest.raises(ConfigurationError, match="topology package"):
        discover_contexts("no_such_package")


def test_two_contexts_with_one_name_are_refused() -> None:
    twin = BoundedContext("retail", namespace="io.other")
    with pytest.raises(ConfigurationError, match="two bounded contexts named 'retail'"):
        render_schema_files([retail, twin])
