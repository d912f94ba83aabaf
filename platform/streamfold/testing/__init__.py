"""Test helpers for domain developers: Given / When / Expect, with no infrastructure.

Kept free of heavy imports: importing ``streamfold.testing`` loads only the domain model.
"""

from __future__ import annotations

from streamfold.testing.gwt import Given, Outcome, given
from streamfold.testing.sagas import SagaGiven, SagaResult, outcome_of

__all__ = ["Given", "Outcome", "SagaGiven", "SagaResult", "given", "outcome_of"]
