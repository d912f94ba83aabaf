"""Models exercising every supported field type, shared by the contract tests."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field

NS = "io.test.contracts"


class Colour(StrEnum):
    """A colour."""

    red = "red"
    blue = "blue"


class Inner(BaseModel):
    """A nested record."""

    label: str
    weight: float = 1.0


class Everything(BaseModel):
    """One field of every supported type."""

    flag: bool
    count: int = Field(description="How many.")
    ratio: float
    text: str
    blob: bytes
    at: AwareDatetime
    day: dt.date
    clock: dt.time
    price: Annotated[Decimal, Field(max_digits=10, decimal_places=2)]
    ident: uuid.UUID
    colour: Colour = Colour.red
    kind: Literal["a", "b"] = "a"
    inner: Inner
    inners: list[Inner] = []
    by_name: dict[str, Inner] = {}
    numbers: tuple[int, ...] = ()
    tags: set[str] = Field(default_factory=set)
    maybe: str | None = None
    maybe_inner: Inner | None = None
    either: int | str = 0
