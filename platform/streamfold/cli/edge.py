"""The process edge: the only place the CLI reads environment variables.

=================================  ===================================================
``STREAMFOLD_HOME``                 where the dev stack keeps data (default ``.streamfold``)
``STREAMFOLD_CACHE_DIR``            where fetched tools live (default ``~/.cache/streamfold``)
``STREAMFOLD_LOG_FORMAT``           ``console`` (default) or ``json``
``STREAMFOLD_LOG_LEVEL``            ``INFO`` (default), ``DEBUG``, ...
``STREAMFOLD_KAFKA_*``              Kafka connection, see :mod:`streamfold.transport.settings`
``STREAMFOLD_REGISTRY_URL``         schema registry (default ``http://localhost:8081``)
``STREAMFOLD_REGISTRY_USERNAME``    registry HTTP basic auth user (default: no auth)
``STREAMFOLD_REGISTRY_PASSWORD``    registry HTTP basic auth password (secret)
``STREAMFOLD_REGISTRY_TIMEOUT_S``   registry request timeout in seconds (default 10)
``STREAMFOLD_REGISTRY_SSL_CA_LOCATION``  CA bundle (PEM) to verify an HTTPS registry
``STREAMFOLD_REGISTRY_SERVER_*``    ``registry serve``, see :mod:`streamfold.registry.server`
=================================  ===================================================
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from streamfold.contracts.evolution import RegistryClientSettings
from streamfold.errors import ConfigurationError
from streamfold.observability.logging import LogFormat, configure_logging
from streamfold.transport.settings import KafkaSettings

if TYPE_CHECKING:
    from streamfold.sink.spec import ConnectorSpec

__all__ = [
    "default_cache_dir",
    "default_home",
    "kafka_settings",
    "registry_settings",
    "setup_logging",
]


def default_home() -> Path:
    return Path(os.environ.get("STREAMFOLD_HOME", ".streamfold")).absolute()


def default_cache_dir() -> Path:
    explicit = os.environ.get("STREAMFOLD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "streamfold"


def setup_logging() -> None:
    """Structured logs as ``STREAMFOLD_LOG_FORMAT`` and ``STREAMFOLD_LOG_LEVEL`` say; and
    SIGUSR1 writes every thread's Python stack to stderr (as a JVM's thread dump on SIGQUIT):
    ``kill -USR1 <pid>`` shows where a process that went quiet is waiting, and a child
    that does not stop in time is asked for it before its SIGKILL (embedded/children.py)."""
    _dump_stacks_on_sigusr1()
    fmt = os.environ.get("STREAMFOLD_LOG_FORMAT", "console")
    if fmt not in ("console", "json"):
        raise ConfigurationError(f"STREAMFOLD_LOG_FORMAT must be console or json, not {fmt!r}")
    configure_logging(cast(LogFormat, fmt), os.environ.get("STREAMFOLD_LOG_LEVEL", "INFO"))


def _dump_stacks_on_sigusr1() -> None:
    """To the process's own stderr (file descriptor 2), even where ``sys.stderr`` is
    replaced by a stream without one (a test's CliRunner): faulthandler writes to a file
    descriptor, from the signal handler. A process without a stderr has nothing to write
    to, and registers nothing."""
    stream = sys.__stderr__
    if stream is None:
        return
    try:
        stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return
    faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)


def kafka_settings(bootstrap: str | None = None) -> KafkaSettings:
    """Kafka settings from the environment, with ``--bootstrap`` taking precedence.

    Every command that reaches Kafka gets its settings here, so this is where a refused
    credential or a failed TLS check stops the process with one clear error (a
    :class:`~streamfold.errors.SecurityError`, see :mod:`streamfold.transport.connect`)
    instead of librdkafka retrying it forever.
    """
    try:
        settings = KafkaSettings()
        if bootstrap:
            settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
    except ValidationError as exc:
        raise ConfigurationError(f"invalid STREAMFOLD_KAFKA_* settings: {exc}") from exc
    from streamfold.transport.connect import verify_kafka_access  # noqa: PLC0415 - light CLI start

    verify_kafka_access(settings)
    return settings


def registry_settings(
    url: str | None = None, username: str | None = None, password: str | None = None
) -> RegistryClientSettings:
    """Schema registry settings from the environment; the given arguments take precedence."""
    given = {"url": url, "username": username, "password": password}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    try:
        return RegistryClientSettings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid STREAMFOLD_REGISTRY_* settings: {exc}") from exc


def connector_spec(
    spec: str,
    *,
    target: str | None = None,
    topic_prefix: str | None = None,
    instance_id: str | None = None,
) -> ConnectorSpec:
    """A sink connector spec with the command line's overrides, the target's password from
    ``STREAMFOLD_SINK_PASSWORD`` (never from the file) and, when ``instance_id`` is not
    given, the instance id from ``STREAMFOLD_SINK_INSTANCE_ID``; context packages import
    from the working directory."""
    from streamfold.sink.spec import load_connector  # noqa: PLC0415

    sys.path.insert(0, str(Path.cwd()))
    return load_connector(
        spec,
        target=target,
        topic_prefix=topic_prefix,
        password=os.environ.get("STREAMFOLD_SINK_PASSWORD"),
        instance_id=instance_id or os.environ.get("STREAMFOLD_SINK_INSTANCE_ID") or None,
    )
