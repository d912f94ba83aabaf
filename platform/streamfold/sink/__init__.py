"""Sinks: projections of a context's topics into query stores."""

from __future__ import annotations
