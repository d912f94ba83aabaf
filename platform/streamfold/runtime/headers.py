"""Deprecated: the header contract is :mod:`streamfold.contracts.headers`."""

from __future__ import annotations

import warnings

from streamfold.contracts.headers import *  # noqa: F403 - the old import path, whole
from streamfold.contracts.headers import __all__  # noqa: F401 - what the star import brings

warnings.warn(
    "streamfold.runtime.headers moved to streamfold.contracts.headers",
    DeprecationWarning,
    stacklevel=2,
)
