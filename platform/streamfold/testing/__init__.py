"""Test helpers for domain developers: Given / When / Expect, with no infrastructure.

Kept free of heavy imports: importing ``streamfold.testing`` loads only the domain model.
``given(aggregate, ...).when(command)`` returns an :class:`AggregateResult`,
``given(saga, ...).when(event)`` a :class:`SagaResult`.
"""

from __future__ import annotations

import warnings
from typing import Any

from streamfold.testing.gwt import AggregateResult, Given, given
from streamfold.testing.sagas import SagaGiven, SagaResult, outcome_of

__all__ = ["AggregateResult", "Given", "SagaGiven", "SagaResult", "given", "outcome_of"]


def __getattr__(name: str) -> Any:
    if name == "Outcome":  # renamed: contracts.results.Outcome is a command's outcome
        warnings.warn(
            "streamfold.testing.Outcome is now streamfold.testing.AggregateResult",
            DeprecationWarning,
            stacklevel=2,
        )
        return AggregateResult
    raise AttributeError(f"module 'streamfold.testing' has no attribute {name!r}")
