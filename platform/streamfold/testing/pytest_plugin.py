"""The streamfold pytest plugin, registered through the ``pytest11`` entry point.

Users of streamfold get it with the package. It provides:

- ``kafka_cluster`` (session): a real single-node Kafka from the fetched jars, started once
  per test session. ``STREAMFOLD_TEST_BOOTSTRAP=host:port`` points the suite at an existing
  cluster instead; ``STREAMFOLD_TEST_KAFKA=testcontainers`` uses a Kafka container where a
  Docker engine exists (needs the ``testcontainers`` package).
- ``kafka_settings`` (session): :class:`~streamfold.transport.settings.KafkaSettings` for it.
- ``topic_factory``: creates fresh, uniquely named topics for one test.
- ``group_id_factory``: fresh consumer-group ids for one test.
- ``state_dir``: a fresh state directory for one test.
- ``kafka_three_node_cluster`` (module): three combined broker+controller processes, for
  fault tests that kill brokers.
- ``schema_registry_factory``: starts ``streamfold registry serve`` processes on a fresh topic
  (``auth=("user", "password")`` turns on basic auth; ``topic=`` shares a topic between
  several registry processes); ``schema_registry`` (module) is one of them.
- ``secured_kafka`` (module): a single-node Kafka whose client listeners are SASL_SSL with
  SCRAM-SHA-512 (one of them demanding client certificates, one with a certificate for
  another host name), with its test CA and certificates (:mod:`streamfold.testing.tls`);
  ``secured_kafka_settings`` (module): :class:`KafkaSettings` that reach it as ``alice``.
- ``test_scale`` (session): ``STREAMFOLD_TEST_SCALE`` (default 1.0), the factor heavy
  acceptance tests apply to their sizes; CI runs them scaled down.
- markers ``unit``, ``integration``, ``fault`` and ``slow``.

Environment variables are read here because pytest is this process's edge.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from streamfold.cli.edge import default_cache_dir
from streamfold.embedded.kafka import BrokerSecurity, LocalKafkaCluster, SecureListener
from streamfold.embedded.ports import free_ports
from streamfold.registry.server import RegistryProcess
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.settings import KafkaSettings

if TYPE_CHECKING:
    from streamfold.testing.tls import TestPki

__all__ = ["KafkaEndpoint", "RunningRegistry", "SecuredKafka", "scaled"]

MARKERS = {
    "unit": "pure logic, no services",
    "integration": "needs the real Kafka broker (started once per session)",
    "fault": "kills processes or brokers; slower",
    "slow": "long-running; scaled down by STREAMFOLD_TEST_SCALE",
}


class KafkaEndpoint(Protocol):
    """Anything with bootstrap servers: a local cluster, an external one, a container."""

    @property
    def bootstrap_servers(self) -> str: ...


class _External:
    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap = bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


@pytest.fixture(scope="session")
def streamfold_cache_dir() -> Path:
    """Where fetched tools (Kafka jars, helm) are cached across sessions."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def test_scale() -> float:
    """How much of the full size heavy tests run (``STREAMFOLD_TEST_SCALE``)."""
    scale = float(os.environ.get("STREAMFOLD_TEST_SCALE", "1.0"))
    if not 0 < scale <= 10:
        raise pytest.UsageError(f"STREAMFOLD_TEST_SCALE must be in (0, 10], got {scale}")
    return scale


def scaled(full: int, scale: float, minimum: int = 1) -> int:
    """``full`` times ``scale``, at least ``minimum``."""
    return max(minimum, round(full * scale))


@pytest.fixture(scope="session")
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory, streamfold_cache_dir: Path
) -> Iterator[KafkaEndpoint]:
    """A Kafka cluster for the whole test session."""
    external = os.environ.get("STREAMFOLD_TEST_BOOTSTRAP")
    if external:
        yield _External(external)
        return
    if os.environ.get("STREAMFOLD_TEST_KAFKA") == "testcontainers":
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - optional dependency

        with KafkaContainer().with_kraft() as container:
            yield _External(container.get_bootstrap_server())
        return
    with LocalKafkaCluster(tmp_path_factory.mktemp("kafka"), streamfold_cache_dir) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_settings(kafka_cluster: KafkaEndpoint) -> KafkaSettings:
    """Connection settings for the session's cluster."""
    return KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)


@pytest.fixture(scope="session")
def kafka_admin(kafka_settings: KafkaSettings) -> KafkaAdmin:
    return KafkaAdmin(kafka_settings)


def _unique(prefix: str, request: pytest.FixtureRequest) -> str:
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_factory(kafka_admin: KafkaAdmin, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a fresh topic for this test: ``topic_factory(partitions=3, config={...})``."""

    def create(
        partitions: int = 1,
        replication_factor: int = 1,
        config: dict[str, str] | None = None,
        name: str | None = None,
    ) -> str:
        topic = name or _unique("t", request)
        kafka_admin.create_topics(
            [TopicSpec(topic, partitions, replication_factor, config or {})], exist_ok=False
        )
        return topic

    return create


@pytest.fixture
def group_id_factory(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Fresh consumer-group ids for this test."""
    return lambda: _unique("g", request)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A fresh state directory for this test."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def kafka_three_node_cluster(
    tmp_path_factory: pytest.TempPathFactory, streamfold_cache_dir: Path
) -> Iterator[LocalKafkaCluster]:
    """Three combined broker+controller processes, for tests that kill brokers."""
    cache = streamfold_cache_dir
    with LocalKafkaCluster(tmp_path_factory.mktemp("kafka3"), cache, nodes=3) as cluster:
        yield cluster


class RunningRegistry:
    """A ``streamfold registry serve`` child process started for tests."""

    def __init__(self, process: RegistryProcess, topic: str, auth: tuple[str, str] | None) -> None:
        self.process = process
        self.topic = topic
        self.auth = auth

    @property
    def url(self) -> str:
        return self.process.url

    def client(self, **conf: Any) -> Any:
        """A confluent-kafka ``SchemaRegistryClient`` for this registry (with its credentials)."""
        from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

        base: dict[str, Any] = {"url": self.url}
        if self.auth is not None:
            base["basic.auth.user.info"] = ":".join(self.auth)
        return SchemaRegistryClient({**base, **conf})

    def restart(self) -> None:
        """Stop the process and start it again (it rebuilds its state from the topic)."""
        self.process.stop()
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


def _registry_factory(
    kafka_cluster: KafkaEndpoint, directory: Path, label: str
) -> tuple[Callable[..., RunningRegistry], list[RunningRegistry]]:
    started: list[RunningRegistry] = []

    def start(auth: tuple[str, str] | None = None, topic: str | None = None) -> RunningRegistry:
        topic = topic or f"_schemas-{label}-{uuid.uuid4().hex[:8]}"
        (port,) = free_ports(1)
        process = RegistryProcess(
            kafka_cluster.bootstrap_servers,
            port,
            topic=topic,
            basic_auth=":".join(auth) if auth else None,
            log_file=directory / f"registry-{port}.log",
        )
        process.start()
        running = RunningRegistry(process, topic, auth)
        started.append(running)
        return running

    return start, started


@pytest.fixture
def schema_registry_factory(
    kafka_cluster: KafkaEndpoint, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningRegistry]]:
    """Start registry processes for this test: ``schema_registry_factory(auth=..., topic=...)``."""
    start, started = _registry_factory(kafka_cluster, tmp_path, _unique("r", request))
    yield start
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def schema_registry(
    kafka_cluster: KafkaEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    """One registry process shared by a test module (use unique subjects per test)."""
    start, started = _registry_factory(
        kafka_cluster, tmp_path_factory.mktemp("registry"), uuid.uuid4().hex[:8]
    )
    yield start()
    for running in started:
        running.stop()


# -- a secured broker (SASL_SSL, SCRAM-SHA-512, mTLS) ---------------------------------------


class SecuredKafka:
    """A cluster with SASL_SSL client listeners, its PKI and its SCRAM-SHA-512 user.

    Listeners: ``SECURE`` (server certificate for 127.0.0.1/localhost), ``MTLS`` (the same,
    and a client certificate is required) and ``MISNAMED`` (a certificate for another host).
    """

    USER = "alice"

    def __init__(self, cluster: LocalKafkaCluster, pki: TestPki, password: str) -> None:
        self.cluster = cluster
        self.pki = pki
        self.password = password

    def bootstrap(self, listener: str = "SECURE") -> str:
        return self.cluster.secure_bootstrap_servers(listener)

    def env(
        self, listener: str = "SECURE", *, client_certificate: bool = False, **overrides: str
    ) -> dict[str, str]:
        """The ``STREAMFOLD_KAFKA_*`` variables a process needs (``overrides``: by field)."""
        env = {
            "bootstrap_servers": self.bootstrap(listener),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": self.USER,
            "sasl_password": self.password,
            "ssl_ca_location": str(self.pki.ca),
        }
        if client_certificate:
            env["ssl_certificate_location"] = str(self.pki.client_certificate)
            env["ssl_key_location"] = str(self.pki.client_key)
        env.update(overrides)
        return {f"STREAMFOLD_KAFKA_{k.upper()}": v for k, v in env.items()}

    def settings(
        self, listener: str = "SECURE", *, client_certificate: bool = False, **overrides: Any
    ) -> KafkaSettings:
        """:class:`KafkaSettings` for ``listener`` (``overrides``: fields to change)."""
        fields: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap(listener),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": self.USER,
            "sasl_password": self.password,
            "ssl_ca_location": self.pki.ca,
        }
        if client_certificate:
            fields["ssl_certificate_location"] = self.pki.client_certificate
            fields["ssl_key_location"] = self.pki.client_key
        fields.update(overrides)
        return KafkaSettings(**fields)


@pytest.fixture(scope="module")
def secured_kafka(
    tmp_path_factory: pytest.TempPathFactory, streamfold_cache_dir: Path
) -> Iterator[SecuredKafka]:
    """A single node with SASL_SSL client listeners (see :class:`SecuredKafka`)."""
    # cryptography comes with PyJWT[crypto]; imported only by the tests that need it.
    from streamfold.testing.tls import make_test_pki  # noqa: PLC0415

    directory = tmp_path_factory.mktemp("secured-kafka")
    pki = make_test_pki(directory / "pki")
    password = uuid.uuid4().hex
    security = BrokerSecurity(
        ca=pki.ca,
        users={SecuredKafka.USER: password},
        listeners=(
            SecureListener("SECURE", pki.server_certificate, pki.server_key),
            SecureListener("MTLS", pki.server_certificate, pki.server_key, client_auth=True),
            SecureListener("MISNAMED", pki.misnamed_certificate, pki.misnamed_key),
        ),
    )
    cluster = LocalKafkaCluster(directory / "kafka", streamfold_cache_dir, security=security)
    with cluster:
        yield SecuredKafka(cluster, pki, password)


@pytest.fixture(scope="module")
def secured_kafka_settings(secured_kafka: SecuredKafka) -> KafkaSettings:
    """Settings that reach :func:`secured_kafka` over SASL_SSL as its SCRAM user."""
    return secured_kafka.settings()
