"""How an expected message differs from the actual one, path by path (the test kit's
reporting)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["diff"]


def diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Describe how ``actual`` differs from ``expected``, one entry per differing path."""
    where = f"{path}: " if path else ""
    if isinstance(expected, BaseModel) and isinstance(actual, BaseModel):
        if type(expected) is not type(actual):
            return [f"{where}expected {type(expected).__name__}, got {type(actual).__name__}"]
        return [
            line
            for name in type(expected).model_fields
            for line in diff(getattr(expected, name), getattr(actual, name), _join(path, name))
        ]
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        if len(expected) != len(actual):
            return [f"{where}expected {len(expected)} item(s), got {len(actual)}"]
        return [
            line
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for line in diff(e, a, f"{path}[{i}]")
        ]
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        keys = sorted({*expected, *actual}, key=str)
        return [
            line for k in keys for line in diff(expected.get(k), actual.get(k), f"{path}[{k!r}]")
        ]
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}expected {expected!r}, got {actual!r}"]
    return []


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
