"""The ``streamfold`` command line.

Each command group lives in its own module and is mounted here. Settings are read from
the environment only in this package (the process edge) and passed down as typed objects.
"""

from __future__ import annotations

from streamfold.cli.app import app, main

__all__ = ["app", "main"]
