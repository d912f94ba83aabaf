"""``streamfold registry serve``: run the registry over uvicorn, and run it as a child process.

:func:`serve` rebuilds the state from the Kafka topic, then answers HTTP until SIGTERM or
SIGINT. :class:`RegistryProcess` starts ``python -m streamfold registry serve`` as a child and
waits until it answers; the dev stack and the test fixtures use it, so what they run is the
same process a user runs.

Environment variables: ``STREAMFOLD_REGISTRY_SERVER_<FIELD>`` for each field of
:class:`RegistryServerSettings` (host, port, topic, replication_factor,
default_compatibility, basic_auth, timeout_s, and ``..._TLS_CERTIFICATE`` /
``..._TLS_KEY``: PEM files that make it serve HTTPS), plus ``STREAMFOLD_KAFKA_*`` for the
topic (:mod:`streamfold.transport.settings`; SASL_SSL and mTLS included).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamfold.contracts.compatibility import CompatibilityLevel
from streamfold.embedded.children import ChildProcess
from streamfold.errors import ConfigurationError
from streamfold.http.server import HttpServer, ServerTls
from streamfold.observability.logging import get_logger
from streamfold.registry.api import RegistryApp
from streamfold.registry.log import KafkaIntentLog
from streamfold.registry.state import RegistryState
from streamfold.transport.settings import KafkaSettings

__all__ = ["RegistryProcess", "RegistryServerSettings", "serve"]

log = get_logger(__name__)


class RegistryServerSettings(BaseSettings):
    """How the registry serves (env ``STREAMFOLD_REGISTRY_SERVER_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMFOLD_REGISTRY_SERVER_", frozen=True, extra="forbid"
    )

    host: str = "127.0.0.1"
    port: int = 8081
    topic: str = "_streamfold_schemas"
    #: Replicas of the topic; default: 3, or fewer when the cluster has fewer brokers.
    replication_factor: int | None = None
    default_compatibility: CompatibilityLevel = CompatibilityLevel.BACKWARD
    #: HTTP basic auth: ``user:password`` pairs separated by commas; unset = no auth.
    basic_auth: SecretStr | None = None
    #: How long a write waits for its intent to be applied before answering 50002.
    timeout_s: float = 30.0
    #: Serve HTTPS with this PEM certificate (chain) and key; both unset: plain HTTP.
    tls_certificate: Path | None = None
    tls_key: Path | None = None

    def users(self) -> dict[str, str]:
        """The basic-auth users (name → password); empty when auth is off."""
        if self.basic_auth is None:
            return {}
        users = {}
        for pair in self.basic_auth.get_secret_value().split(","):
            name, sep, password = pair.strip().partition(":")
            if not sep or not name:
                raise ConfigurationError("basic_auth must be user:password pairs, comma-separated")
            users[name] = password
        return users


def serve(settings: RegistryServerSettings, kafka: KafkaSettings) -> None:
    """Rebuild the state from Kafka, then answer HTTP until stopped."""
    tls = ServerTls.of(settings.tls_certificate, settings.tls_key, "the registry")
    state = RegistryState(settings.default_compatibility)
    intent_log = KafkaIntentLog(
        kafka, state, settings.topic, settings.replication_factor, settings.timeout_s
    )
    intent_log.start()
    app = RegistryApp(intent_log, settings.users())
    server = HttpServer(app, settings.host, settings.port, name="registry", lifespan="off", tls=tls)
    log.info(
        "registry serving",
        url=server.url,
        topic=settings.topic,
        auth=bool(settings.basic_auth),
    )
    try:
        server.run()
    finally:
        intent_log.stop()
        log.info("registry stopped")


class RegistryProcess(ChildProcess):
    """``streamfold registry serve`` as a child process (SIGTERM stops it)."""

    def __init__(
        self,
        bootstrap_servers: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        topic: str = "_streamfold_schemas",
        basic_auth: str | None = None,
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
        tls: ServerTls | None = None,
        ca: Path | None = None,
    ) -> None:
        """``tls`` serves HTTPS; ``ca`` is the PEM CA that verifies it for readiness."""
        self.url = f"{'https' if tls is not None else 'http'}://{host}:{port}"
        env = {
            **os.environ,
            "STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMFOLD_REGISTRY_SERVER_HOST": host,
            "STREAMFOLD_REGISTRY_SERVER_PORT": str(port),
            "STREAMFOLD_REGISTRY_SERVER_TOPIC": topic,
            "STREAMFOLD_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        if basic_auth:
            env["STREAMFOLD_REGISTRY_SERVER_BASIC_AUTH"] = basic_auth
        if tls is not None:
            env["STREAMFOLD_REGISTRY_SERVER_TLS_CERTIFICATE"] = str(tls.certificate)
            env["STREAMFOLD_REGISTRY_SERVER_TLS_KEY"] = str(tls.key)
        super().__init__(
            ["registry", "serve"],
            env=env,
            ready_url=f"{self.url}/healthz",
            log_file=log_file,
            name=f"the schema registry at {self.url}",
            ready_ca=ca,
        )
