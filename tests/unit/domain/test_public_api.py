"""The names a domain is written with come from ``streamfold`` itself."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import streamfold
import streamfold.domain
import streamfold.errors

pytestmark = pytest.mark.unit


def test_the_domain_names_are_the_top_level_ones() -> None:
    from streamfold import (  # noqa: PLC0415
        Aggregate,
        BoundedContext,
        Command,
        Event,
        Metadata,
        Rejected,
        State,
    )

    domain = streamfold.domain
    assert (Aggregate, BoundedContext, Command, Event, Metadata, State) == (
        domain.Aggregate,
        domain.BoundedContext,
        domain.Command,
        domain.Event,
        domain.Metadata,
        domain.State,
    )
    assert Rejected is streamfold.errors.Rejected
    assert streamfold.__version__ == version("streamfold")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Worker'"):
        _ = streamfold.Worker  # type: ignore[attr-defined]


def test_importing_streamfold_loads_no_domain_code() -> None:
    """``python -m streamfold`` and the processes it starts import only what they run."""
    probe = "import sys, streamfold; print(sorted(m for m in sys.modules if 'streamfold.' in m))"
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"


def test_the_domain_package_exports_only_the_domain_names() -> None:
    assert sorted(streamfold.domain.__all__) == sorted(set(streamfold.__all__) - {"__version__"})


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("SoftDelete", "streamfold.domain.aggregate"),
        ("Snapshot", "streamfold.domain.aggregate"),
        ("Decision", "streamfold.domain.aggregate"),
        ("HandlerContractError", "streamfold.errors"),
        ("DeleteAggregate", "streamfold.domain.messages"),
        ("RecoverAggregate", "streamfold.domain.messages"),
        ("AggregateDeleted", "streamfold.domain.messages"),
        ("AggregateRecovered", "streamfold.domain.messages"),
    ],
)
def test_an_internal_name_still_imports_from_the_domain_package_with_a_warning(
    name: str, home: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"import it from {home}"):
        value = getattr(streamfold.domain, name)
    assert value is getattr(sys.modules[home], name)


def test_the_aggregate_scenario_result_no_longer_shares_a_name_with_a_command_outcome() -> None:
    import streamfold.testing  # noqa: PLC0415

    assert "Outcome" not in streamfold.testing.__all__
    with pytest.warns(DeprecationWarning, match="now streamfold.testing.AggregateResult"):
        renamed = streamfold.testing.Outcome  # type: ignore[attr-defined]
    assert renamed is streamfold.testing.AggregateResult
