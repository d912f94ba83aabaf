from __future__ import annotations

from streamfold.testing.invariants import _ranges


def test_offsets_are_written_as_ranges() -> None:
    assert _ranges([9, 3, 5, 4, 11, 12]) == "3-5, 9, 11-12"
    assert _ranges([7]) == "7"
