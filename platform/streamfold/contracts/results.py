"""The command result: what a worker answers to every command it reads.

One result per command on ``{context}.{aggregate}.results``, keyed by the command id, on the
partition with the number of the command's own partition (murmur2 of the aggregate id): a
caller waiting for a command reads that one partition and matches the key. Keeping results
with their command's partition also keeps a transaction's writes on as few partitions as
possible (each partition a transaction touches costs a produce request). Outcomes:

- ``accepted``: ``version`` is the aggregate's version after the command, ``event_types`` the
  types of the events it caused, in order;
- ``rejected``: the domain refused it; ``code`` and ``message`` say why, ``version`` is the
  aggregate's current version;
- ``invalid``: the record could not be processed (bad bytes, unknown schema, invalid model,
  wrong key, a handler that kept failing); ``code`` is the dead-letter reason and
  ``message`` the error. The record itself is in the dead-letter topic.

A command whose ``tenant`` header is not its aggregate's is ``rejected`` with the code
:data:`TENANT_MISMATCH` and version 0 (nothing of the aggregate is told).

``duplicate`` marks an answer to a repeated command id: the first result again, no effect.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = ["RESULT_NAMESPACE", "TENANT_MISMATCH", "CommandResult", "Outcome"]

RESULT_NAMESPACE = "io.streamfold.runtime"
#: The rejection code of a command addressed to another tenant's aggregate.
TENANT_MISMATCH = "tenant_mismatch"


class Outcome(StrEnum):
    """How a command ended."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    INVALID = "invalid"


class CommandResult(BaseModel):
    """The result of one command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str
    request_id: str | None = None
    aggregate_type: str
    aggregate_id: str | None = None
    command_type: str | None = None
    outcome: Outcome
    version: int = 0
    event_types: list[str] = []
    code: str | None = None
    message: str | None = None
    duplicate: bool = False
    processed_at: AwareDatetime
