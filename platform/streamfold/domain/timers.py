"""What a decision says about timers, for sagas and aggregates alike: a name and an instant
or a delay, resolved against the input's time, or cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamfold.errors import HandlerContractError

__all__ = ["CANCELLED", "is_cancelled", "resolve_due"]

#: A timer's due instant that means: cancelled.
CANCELLED = datetime.min.replace(tzinfo=UTC)


def is_cancelled(due: datetime) -> bool:
    return due == CANCELLED


def resolve_due(name: str, when: datetime | timedelta, since: datetime) -> datetime:
    """The due instant (aware, UTC) of timer ``name``: ``when`` itself, or ``since`` plus it."""
    if isinstance(when, timedelta):
        return (since + when).astimezone(UTC)
    if isinstance(when, datetime) and when.tzinfo is not None:
        return when.astimezone(UTC)
    raise HandlerContractError(
        f"timer {name!r} must be a timedelta or an aware datetime, got {when!r}"
    )
