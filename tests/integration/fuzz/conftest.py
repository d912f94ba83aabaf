"""The fuzz tests run real workers: they share the worker tests' fixtures."""

from __future__ import annotations

from tests.integration.runtime.conftest import retail_run

__all__ = ["retail_run"]
