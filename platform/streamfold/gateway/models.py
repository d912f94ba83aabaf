"""The gateway's answers as pydantic models: its OpenAPI contract, and what the SDK parses.

This module imports nothing of the gateway's machinery, so the SDK can use it alone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CommandStatus", "FieldError", "Problem", "QueryResult", "StageName"]

StageName = Literal["sent", "processed", "projected"]
OutcomeName = Literal["accepted", "rejected", "invalid"]


class CommandStatus(BaseModel):
    """Where a command is, and its outcome once its aggregate has answered."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    #: The furthest stage reached: ``sent`` (in Kafka), ``processed`` (its aggregate
    #: answered), ``projected`` (visible in ClickHouse).
    stage: StageName
    outcome: OutcomeName | None = None
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    command_type: str | None = None
    #: The aggregate's version after the command (accepted) or its current one (rejected).
    version: int | None = None
    event_types: list[str] = Field(default_factory=list)
    code: str | None = None
    message: str | None = None
    #: This command id had been seen before: the first outcome, no second effect.
    replay: bool = False


class QueryResult(BaseModel):
    """The rows of a named query."""

    model_config = ConfigDict(extra="forbid")

    query: str
    columns: list[str]
    rows: list[list[Any]]
    #: More rows matched than the query's row limit; ``rows`` holds the first ones.
    truncated: bool = False


class FieldError(BaseModel):
    """One invalid field of a request."""

    model_config = ConfigDict(extra="forbid")

    #: Where: ``["body", "quantity"]``, ``["header", "Wait-Timeout-Ms"]``, ...
    loc: list[str | int]
    message: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem detail, with streamfold's extensions."""

    model_config = ConfigDict(extra="forbid")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str | None = None
    command_id: str | None = None
    current_version: int | None = None
    errors: list[FieldError] | None = None
