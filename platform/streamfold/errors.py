"""The one error tree of streamfold.

Every adapter translates the errors of the library it wraps into this tree, at its
boundary, and nowhere else:

- ``StreamfoldError`` is the root; catch it to catch anything streamfold raises.
- ``RetryableError``: the same call may succeed later (a broker not yet reachable, a
  timeout, a transaction coordinator moving). Callers back off and retry.
- ``PermanentError``: retrying the same call cannot help (bad configuration, a missing
  tool, an invalid record). Callers report it, dead-letter it, or stop.
- ``SecurityError`` (permanent): credentials or certificates refused, or a certificate that
  fails verification; raised at start-up, before any work, so a process stops at once.
- ``Rejected``: a domain decision, not a failure. It carries a machine-readable ``code``
  and a ``message`` a caller can act on.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "HandlerContractError",
    "HostEnvironmentError",
    "PermanentError",
    "Rejected",
    "RetryableError",
    "SecurityError",
    "StreamfoldError",
]


class StreamfoldError(Exception):
    """Root of every error streamfold raises."""


class RetryableError(StreamfoldError):
    """The operation failed but may succeed if retried after a back-off."""


class PermanentError(StreamfoldError):
    """The operation cannot succeed by retrying it."""


class ConfigurationError(PermanentError):
    """A setting, file or argument is wrong; the message names it."""


class HandlerContractError(PermanentError):
    """A decide, evolve or saga handler broke its contract (wrong return type, unknown
    event, a timer it has no handler for)."""


class HostEnvironmentError(PermanentError):
    """The machine lacks something streamfold needs (a JDK, Maven, a free port)."""


class SecurityError(PermanentError):
    """A peer refused our credentials or client certificate, or its certificate failed
    verification (untrusted, or for another host name); the message names which."""


class Rejected(StreamfoldError):
    """A domain rejection: the command is well-formed but the aggregate refuses it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
