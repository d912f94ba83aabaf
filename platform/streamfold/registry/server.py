"""``streamfold registry serve``: run the registry over uvicorn, and run it as a child process.

:func:`serve` rebuilds the state from the Kafka topic, then answers HTTP until SIGTERM or
SIGINT. :class:`RegistryProcess` starts ``python -m streamfold registry serve`` as a child and
waits until it answers; the dev stack and the test fixtures use it, so what they run is the
same process a user runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import uvicorn
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamfold.contracts.compatibility import CompatibilityLevel
from streamfold.embedded.children import die_with_parent
from streamfold.errors import ConfigurationError, HostEnvironmentError
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
    state = RegistryState(settings.default_compatibility)
    intent_log = KafkaIntentLog(
        kafka, state, settings.topic, settings.replication_factor, settings.timeout_s
    )
    intent_log.start()
    app = RegistryApp(intent_log, settings.users())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    log.info(
        "registry serving",
        url=f"http://{settings.host}:{settings.port}",
        topic=settings.topic,
        auth=bool(settings.basic_auth),
    )
    try:
        uvicorn.Server(config).run()
    finally:
        intent_log.stop()
        log.info("registry stopped")


class RegistryProcess:
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
    ) -> None:
        self.url = f"http://{host}:{port}"
        self.log_file = log_file
        self._env = {
            **os.environ,
            "STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMFOLD_REGISTRY_SERVER_HOST": host,
            "STREAMFOLD_REGISTRY_SERVER_PORT": str(port),
            "STREAMFOLD_REGISTRY_SERVER_TOPIC": topic,
            "STREAMFOLD_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        if basic_auth:
            self._env["STREAMFOLD_REGISTRY_SERVER_BASIC_AUTH"] = basic_auth
        self._auth = basic_auth.split(",")[0] if basic_auth else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> RegistryProcess:
        """Start the child and wait until ``/healthz`` says ready."""
        output = self.log_file.open("ab") if self.log_file is not None else None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamfold", "registry", "serve"],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=output if output is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - sets PDEATHSIG only
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HostEnvironmentError(
                    f"the registry exited with code {self.process.returncode} "
                    f"(log: {self.log_file})"
                )
            if self.answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise HostEnvironmentError(f"the registry at {self.url} was not ready in {timeout}s")

    def answers(self) -> bool:
        """Whether the registry answers ``/healthz`` as ready."""
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return b'"ready": true' in response.read()
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the child and wait; SIGKILL if it does not stop in ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
