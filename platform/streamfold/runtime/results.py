"""Deprecated: the command result record is :mod:`streamfold.contracts.results`."""

from __future__ import annotations

import warnings

from streamfold.contracts.results import *  # noqa: F403 - the old import path, whole
from streamfold.contracts.results import __all__  # noqa: F401 - what the star import brings

warnings.warn(
    "streamfold.runtime.results moved to streamfold.contracts.results",
    DeprecationWarning,
    stacklevel=2,
)
