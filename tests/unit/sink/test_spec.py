from __future__ import annotations

from pathlib import Path

import pytest

from streamfold.errors import ConfigurationError
from streamfold.sink.spec import load_connector
from streamfold.sink.target import chdb_path

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_the_retail_spec_loads_and_overrides_win() -> None:
    spec = load_connector("retail", root=ROOT / "connectors", target="chdb:///tmp/x")
    assert spec.name == "retail" and spec.target == "chdb:///tmp/x"
    assert spec.group_id == "streamfold.sink.retail"
    assert spec.load_context().name == "retail"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: retail\ncontext: a:b\nbatch_rows: 0\n", "batch_rows"),
        ("name: retail\ncontext: a:b\ntarget: mysql://x\n", "target"),
        ("name: retail\ncontext: a:b\ndatabase: 'x; DROP'\n", "database"),
        ("name: retail\ncontext: a:b\npasword: x\n", "pasword"),
        ("- just a list\n", "mapping"),
    ],
)
def test_a_bad_spec_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_connector(path)
    assert str(path) in str(caught.value)


def test_chdb_paths_relative_absolute_and_in_memory(tmp_path: Path) -> None:
    assert chdb_path("chdb:///abs/ch") == Path("/abs/ch")
    assert chdb_path("chdb:rel/ch") == (Path.cwd() / "rel" / "ch").resolve()
    assert chdb_path("chdb://memory") is None
    assert chdb_path("http://localhost:8123") is None


def test_a_sink_fails_over_in_seconds_and_may_be_a_static_member(tmp_path: Path) -> None:
    """librdkafka's 45 s session held a killed sink's partitions (and PROJECTED waits) that
    long: a spec gets 6 s, and an instance id makes it a static member."""
    spec = load_connector("retail", root=ROOT / "connectors")
    assert spec.membership_config() == {
        "session.timeout.ms": 6_000,
        "heartbeat.interval.ms": 1_500,
    }
    spec = load_connector("retail", root=ROOT / "connectors", instance_id="retail-sink-0")
    assert spec.membership_config()["group.instance.id"] == "retail-sink-0"
    path = tmp_path / "sink.yaml"
    path.write_text("name: retail\ncontext: a:b\ninstance_id: 'a b'\n")
    with pytest.raises(ConfigurationError, match="instance_id"):
        load_connector(path)
