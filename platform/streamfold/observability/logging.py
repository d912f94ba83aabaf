"""Structured logging with structlog.

Two renderings of the same events: JSON lines in production (one object per line, for a
log pipeline) and a readable console rendering in development. Correlation fields
(``command_id``, ``request_id``, ``trace_id``, ...) are bound with :func:`bind_correlation`
and appear on every line logged inside that context, including lines from the standard
library's ``logging`` that structlog formats.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import structlog

__all__ = ["LogFormat", "bind_correlation", "configure_logging", "get_logger"]

LogFormat = Literal["json", "console"]


def configure_logging(fmt: LogFormat = "console", level: str = "INFO") -> None:
    """Configure structlog and the standard library logging once, at the process edge."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
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
