"""Structured logging with structlog.

Two renderings of the same events: JSON lines in production (one object per line, for a
log pipeline) and a readable console rendering in development. Correlation fields
(``command_id``, ``request_id``, ``trace_id``, ...) are bound with :func:`bind_correlation`
and appear on every line logged inside that context, including lines from the standard
library's ``logging`` that structlog formats.

A worker handles thousands of messages a second and logs about few of them, so the ids of the
message in hand are set with :func:`message_correlation` (one context variable, set and reset
per message) and expanded into fields only when a line is actually logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Literal

import structlog

__all__ = [
    "THIRD_PARTY",
    "LogFormat",
    "MessageCorrelation",
    "bind_correlation",
    "configure_logging",
    "end_message_correlation",
    "get_logger",
    "message_correlation",
]

LogFormat = Literal["json", "console"]

#: Libraries whose INFO lines (one per HTTP request, per connection, ...) would drown
#: streamfold's own: they log at WARNING and above whatever the process's level.
THIRD_PARTY = (
    "aiokafka",
    "asyncio",
    "chdb",
    "clickhouse_connect",
    "confluent_kafka",
    "faust",
    "filelock",
    "httpcore",
    "httpx",
    "httpx2",
    "mode",
    "urllib3",
    "uvicorn.access",
)


def configure_logging(fmt: LogFormat = "console", level: str = "INFO") -> None:
    """Configure structlog and the standard library logging once, at the process edge."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _merge_message_correlation,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_logger_name,
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str, **initial: Any) -> structlog.stdlib.BoundLogger:
    """Return a logger for a module, optionally with fields bound to every line."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger.bind(**initial) if initial else logger


@contextmanager
def bind_correlation(**ids: str | int | None) -> Iterator[None]:
    """Bind correlation ids (command_id, request_id, trace_id, ...) for a block of work."""
    present = {k: v for k, v in ids.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**present):
        yield


@dataclass(frozen=True, slots=True)
class MessageCorrelation:
    """The ids of the message being handled; ``traceparent`` is W3C's header, as received."""

    command_id: str
    request_id: str | None = None
    traceparent: str | None = None


_MESSAGE: ContextVar[MessageCorrelation | None] = ContextVar("streamfold_message", default=None)


def message_correlation(ids: MessageCorrelation) -> Token[MessageCorrelation | None]:
    """Make ``ids`` the correlation of every line logged until :func:`end_message_correlation`."""
    return _MESSAGE.set(ids)


def end_message_correlation(token: Token[MessageCorrelation | None]) -> None:
    _MESSAGE.reset(token)


def _merge_message_correlation(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    ids = _MESSAGE.get()
    if ids is not None:
        event.setdefault("command_id", ids.command_id)
        if ids.request_id is not None:
            event.setdefault("request_id", ids.request_id)
        parts = (ids.traceparent or "").split("-")
        if len(parts) == 4:  # 00-<trace id>-<span id>-<flags>
            event.setdefault("trace_id", parts[1])
    return event
