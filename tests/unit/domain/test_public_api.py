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
