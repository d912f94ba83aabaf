"""``python -m streamfold`` runs the CLI."""

from __future__ import annotations

from streamfold.cli import main

main()
