"""Topology and connector spec loaders on generated files: a spec, or their documented error.

Both loaders promise one error for any bad file, a :class:`ConfigurationError` naming the
file (YAML that does not parse, a document that is not a mapping, a field pydantic refuses);
any other exception would reach the operator as a traceback from ``streamfold worker`` or
``streamfold sink``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamfold.errors import ConfigurationError
from streamfold.runtime.topology import TopologySpec, load_topology
from streamfold.sink.spec import ConnectorSpec, load_connector
from streamfold.testing.pytest_plugin import scaled

pytestmark = pytest.mark.unit

EXAMPLES = scaled(500, float(os.environ.get("STREAMFOLD_TEST_SCALE", "1.0")), 100)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

Loader = Callable[[Path], Any]
LOADERS: dict[str, tuple[Loader, type[Any], list[str]]] = {
    "topology": (
        load_topology,
        TopologySpec,
        ["name", "context", "aggregates", "sagas", "handlers", "topics", "worker"],
    ),
    "connector": (
        load_connector,
        ConnectorSpec,
        [
            "name",
            "context",
            "aggregates",
            "target",
            "database",
            "username",
            "password",
            "topic_prefix",
            "batch_rows",
            "batch_interval_ms",
            "log_interval_ms",
            "acks",
        ],
    ),
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["retail", "chdb:///tmp/x", "http://h:8123", "a:b", "retail\n", "x; DROP", "é", "0"]
    )
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(scalars, inner, max_size=3),
    max_leaves=12,
)


def documents(fields: list[str]) -> st.SearchStrategy[Any]:
    """Mostly mappings of the spec's own fields (and a few others) to any YAML value."""
    keys = st.sampled_from([*fields, "extra", "partitions"]) | scalars
    mapping = st.dictionaries(keys, values, max_size=6)
    near_valid = st.fixed_dictionaries(
        {"name": st.sampled_from(["retail", "Retail", "a-b", ""]), "context": values},
        optional={f: values for f in fields if f not in ("name", "context")},
    )
    return near_valid | mapping | values


def load(kind: str, text: str | bytes) -> Any:
    """Write ``text`` to a fresh file and load it; the documented error is re-raised."""
    loader, spec_type, _ = LOADERS[kind]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "spec.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        try:
            spec = loader(path)
        except ConfigurationError as exc:
            assert str(path) in str(exc), exc  # the error names the file
            return None
    assert isinstance(spec, spec_type)
    return spec


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(data=st.data())
def test_generated_yaml_documents_load_or_raise_the_documented_error(
    kind: str, data: st.DataObject
) -> None:
    document = data.draw(documents(LOADERS[kind][2]), label="document")
    load(kind, yaml.safe_dump(document, allow_unicode=True))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(text=st.text(max_size=80) | st.binary(max_size=80))
@example(text="- a\n- list\n")  # a document that is not a mapping
@example(text="just a string\n")
@example(text="42\n")
@example(text="name: retail\ncontext: a:b\n1: one\n")  # a key that is not a string
@example(text=b"name: r\xe9tail\n")  # not UTF-8
@example(text="a: &x [*x]\n")  # a recursive alias
@example(text="!!python/object:os.system {}\n")  # a tag safe_load refuses
def test_arbitrary_text_loads_or_raises_the_documented_error(kind: str, text: str | bytes) -> None:
    load(kind, text)


def test_a_database_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    """``$`` matches before a final newline: the identifier check must match it all."""
    path = tmp_path / "sink.yaml"
    path.write_text('name: retail\ncontext: a:b\ndatabase: "retail\\n"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="database"):
        load_connector(path)
