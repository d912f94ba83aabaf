"""Run a real Apache Kafka cluster in KRaft mode as child processes on loopback.

A cluster of ``n`` nodes is ``n`` combined broker+controller JVMs with a static controller
quorum (``controller.quorum.voters``; storage is formatted without ``--standalone``, which
cannot be combined with it). One node is the embedded default; three nodes serve the fault
tests.

Start-up, in order:

1. check Java 17+ and that every port is free (the error names the owning pid);
2. fetch the jars if they are not cached (:func:`~streamfold.embedded.jars.ensure_kafka_jars`);
3. write each node's ``server.properties`` and format its storage with one cluster id;
4. start each JVM as a child process in its own session, with ``PR_SET_PDEATHSIG`` so the
   kernel kills it if this process dies, even by SIGKILL;
5. wait until every node answers a metadata request (no fixed sleeps, no log scraping).

With ``security=`` (a :class:`BrokerSecurity`) every node also opens one SASL_SSL listener
per :class:`SecureListener` for clients: SCRAM-SHA-512 users are written into the storage
at format time (``kafka-storage format --add-scram``), the listener's certificate and key
are PEM files loaded inline (``ssl.keystore.type=PEM``), and a listener may demand client
certificates (mTLS). The controller and inter-broker listeners stay PLAINTEXT on loopback,
and readiness is checked over them.

Stopping sends SIGTERM (a controlled shutdown) and SIGKILL after a grace period. Nodes
still running when the interpreter exits are stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import base64
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamfold.embedded.children import die_with_parent
from streamfold.embedded.jars import KafkaDistribution, ensure_kafka_jars
from streamfold.embedded.java import find_java, run_tool
from streamfold.embedded.ports import ensure_port_free, free_ports
from streamfold.errors import HostEnvironmentError, RetryableError
from streamfold.observability.logging import get_logger

__all__ = ["BrokerSecurity", "KafkaNode", "LocalKafkaCluster", "NodePorts", "SecureListener"]

log = get_logger(__name__)

_LIVE: set[LocalKafkaCluster] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for cluster in list(_LIVE):
        cluster.stop()


@dataclass(frozen=True, slots=True)
class NodePorts:
    """The listeners of one combined broker+controller node (``secure``: one port per
    :class:`SecureListener`, in order)."""

    broker: int
    controller: int
    secure: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SecureListener:
    """A SASL_SSL (SCRAM-SHA-512) listener for clients.

    ``name`` is the Kafka listener name (letters and underscores); ``certificate`` and
    ``key`` are the server's PEM certificate (chain) and unencrypted PKCS#8 key;
    ``client_auth`` demands a client certificate signed by the CA (mTLS).
    """

    name: str
    certificate: Path
    key: Path
    client_auth: bool = False


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """The secured client listeners of a cluster, their CA and SCRAM-SHA-512 users."""

    ca: Path
    users: Mapping[str, str]
    listeners: tuple[SecureListener, ...]

    def __post_init__(self) -> None:
        reserved = {"PLAINTEXT", "CONTROLLER"}
        for listener in self.listeners:
            if listener.name.upper() in reserved or not listener.name.replace("_", "").isalnum():
                raise ValueError(f"invalid secure listener name {listener.name!r}")


@dataclass(slots=True)
class KafkaNode:
    """One JVM of the cluster: its id, ports, directory and process."""

    node_id: int
    ports: NodePorts
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.broker}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's server log and stdout, for error messages."""
        chunks = []
        for name in ("logs/server.log", "stdout.log"):
            path = self.directory / name
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                chunks.append(f"--- {path} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks)


class LocalKafkaCluster:
    """A real KRaft Kafka cluster of ``nodes`` combined broker+controller processes."""

    def __init__(
        self,
        base_dir: Path,
        cache_dir: Path,
        nodes: int = 1,
        ports: Sequence[NodePorts] | None = None,
        heap_mb: int | None = None,
        java_home: str | None = None,
        extra_config: dict[str, str] | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.security = security
        secure = len(security.listeners) if security is not None else 0
        if ports is None:
            each = 2 + secure
            flat = free_ports(each * nodes)
            ports = [
                NodePorts(
                    flat[each * i], flat[each * i + 1], tuple(flat[each * i + 2 : each * (i + 1)])
                )
                for i in range(nodes)
            ]
        if len(ports) != nodes:
            raise ValueError(f"{nodes} nodes need {nodes} port pairs, got {len(ports)}")
        if any(len(p.secure) != secure for p in ports):
            raise ValueError(f"each node needs {secure} secure listener ports")
        self.base_dir = base_dir
        self.cache_dir = cache_dir
        # Sized for a 2-core, 24 GB machine: one node gets 1 GB, each of three 512 MB.
        self.heap_mb = heap_mb or (1024 if nodes == 1 else 512)
        self.java_home = java_home
        self.extra_config = dict(extra_config or {})
        self.nodes = [KafkaNode(i + 1, p, base_dir / f"node-{i + 1}") for i, p in enumerate(ports)]
        self._java: Path | None = None
        self._dist: KafkaDistribution | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def secure_bootstrap_servers(self, listener: str) -> str:
        """The bootstrap list of the secure listener named ``listener``."""
        names = [x.name for x in self.security.listeners] if self.security is not None else []
        if listener not in names:
            raise KeyError(f"no secure listener {listener!r}; the cluster has {names}")
        index = names.index(listener)
        return ",".join(f"127.0.0.1:{n.ports.secure[index]}" for n in self.nodes)

    def start(self, timeout: float = 120.0) -> Self:
        """Format (first time only) and start every node; return once all answer metadata."""
        self._java = find_java(self.java_home)
        for node in self.nodes:
            for port in (node.ports.broker, node.ports.controller, *node.ports.secure):
                ensure_port_free(port)
        self._dist = ensure_kafka_jars(self.cache_dir)
        started = time.monotonic()
        cluster_id = self._cluster_id()
        unformatted = []
        for node in self.nodes:
            self._write_config(node)
            if not (node.directory / "data" / "meta.properties").exists():
                unformatted.append(node)
        # Each format is a JVM start; run them side by side.
        with ThreadPoolExecutor(max_workers=max(1, len(unformatted))) as pool:
            for done in [pool.submit(self._format, n, cluster_id) for n in unformatted]:
                done.result()
        _LIVE.add(self)
        try:
            for node in self.nodes:
                self._spawn(node)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "kafka cluster ready",
            nodes=len(self.nodes),
            bootstrap=self.bootstrap_servers,
            seconds=round(time.monotonic() - started, 2),
        )
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stop every node: SIGTERM, then SIGKILL after ``grace`` seconds."""
        for node in self.nodes:
            if node.is_running():
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in self.nodes:
            self._reap(node, deadline)
        _LIVE.discard(self)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        node = self.node(node_id)
        if node.process is not None and node.is_running():
            node.process.kill()
            node.process.wait(timeout=30)

    def restart_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again and wait for the cluster to see it."""
        node = self.node(node_id)
        if node.is_running():
            raise RuntimeError(f"node {node_id} is running")
        self._spawn(node)
        self.wait_ready(timeout)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- readiness ---------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Block until every running node is in the metadata the cluster returns."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.is_running()]
        delay = 0.05
        for node in running:
            while not _tcp_open(node.ports.broker):
                self._check_alive(node)
                if time.monotonic() > deadline:
                    raise RetryableError(
                        f"kafka node {node.node_id} did not open port {node.ports.broker} "
                        f"within {timeout:.0f}s\n{node.log_tail()}"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        admin = AdminClient({"bootstrap.servers": ",".join(n.address for n in running)})
        wanted = {n.node_id for n in running}
        while True:
            for node in running:
                self._check_alive(node)
            try:
                metadata = admin.list_topics(timeout=2)
            except KafkaException:
                metadata = None
            if metadata is not None and wanted <= set(metadata.brokers):
                return
            if time.monotonic() > deadline:
                raise RetryableError(
                    f"kafka cluster did not report brokers {sorted(wanted)} within "
                    f"{timeout:.0f}s\n{running[0].log_tail()}"
                )
            time.sleep(0.1)

    @staticmethod
    def _check_alive(node: KafkaNode) -> None:
        if node.process is not None and node.process.poll() is not None:
            raise HostEnvironmentError(
                f"kafka node {node.node_id} exited with code {node.process.returncode} "
                f"during start-up\n{node.log_tail()}"
            )

    # -- processes ---------------------------------------------------------------------

    def _spawn(self, node: KafkaNode) -> None:
        assert self._java is not None and self._dist is not None
        (node.directory / "logs").mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self._java),
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *_logging_flags(node),
            "-cp",
            self._dist.classpath,
            "kafka.Kafka",
            str(node.directory / "server.properties"),
        ]
        with (node.directory / "stdout.log").open("ab") as out:
            node.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - sets PDEATHSIG only
            )
        log.info("kafka node started", node=node.node_id, pid=node.pid, port=node.ports.broker)

    @staticmethod
    def _reap(node: KafkaNode, deadline: float) -> None:
        if node.process is None:
            return
        try:
            node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("kafka node did not stop in time; killing it", node=node.node_id)
            node.process.kill()
            node.process.wait(timeout=30)

    # -- storage and configuration -----------------------------------------------------

    def _cluster_id(self) -> str:
        path = self.base_dir / "cluster.id"
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        path.write_text(cluster_id + "\n", encoding="utf-8")
        return cluster_id

    def _format(self, node: KafkaNode, cluster_id: str) -> None:
        assert self._java is not None and self._dist is not None
        run_tool(
            [
                str(self._java),
                "-Xmx256m",
                "-cp",
                self._dist.classpath,
                *_logging_flags(node),
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                # "=" form: a base64 id may start with "-", which argparse would take for an option.
                f"--cluster-id={cluster_id}",
                "-c",
                str(node.directory / "server.properties"),
                *self._scram_arguments(),
            ],
            f"formatting KRaft storage of node {node.node_id} failed",
            timeout=120,
        )

    def _scram_arguments(self) -> list[str]:
        """``--add-scram`` for each user: their credentials go into the bootstrap metadata."""
        if self.security is None:
            return []
        return [
            f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
            for name, password in self.security.users.items()
        ]

    def _security_config(self) -> dict[str, str]:
        """The secure listeners' SSL and SASL configuration (empty without ``security``)."""
        if self.security is None:
            return {}
        ca = _pem_value(self.security.ca)
        config: dict[str, str] = {}
        for listener in self.security.listeners:
            prefix = f"listener.name.{listener.name.lower()}."
            config.update(
                {
                    f"{prefix}ssl.keystore.type": "PEM",
                    f"{prefix}ssl.keystore.certificate.chain": _pem_value(listener.certificate),
                    f"{prefix}ssl.keystore.key": _pem_value(listener.key),
                    f"{prefix}ssl.truststore.type": "PEM",
                    f"{prefix}ssl.truststore.certificates": ca,
                    f"{prefix}ssl.client.auth": "required" if listener.client_auth else "none",
                    f"{prefix}sasl.enabled.mechanisms": "SCRAM-SHA-512",
                    f"{prefix}scram-sha-512.sasl.jaas.config": (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    ),
                }
            )
        return config

    def _listeners(self, node: KafkaNode) -> tuple[str, str, str]:
        """``listeners``, ``advertised.listeners`` and ``listener.security.protocol.map``."""
        secure = self.security.listeners if self.security is not None else ()
        pairs = [(x.name, port) for x, port in zip(secure, node.ports.secure, strict=True)]
        advertised = [f"PLAINTEXT://127.0.0.1:{node.ports.broker}"]
        advertised += [f"{name}://127.0.0.1:{port}" for name, port in pairs]
        listeners = [*advertised, f"CONTROLLER://127.0.0.1:{node.ports.controller}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        protocols += [f"{name}:SASL_SSL" for name, _ in pairs]
        return ",".join(listeners), ",".join(advertised), ",".join(protocols)

    def _write_config(self, node: KafkaNode) -> None:
        n = len(self.nodes)
        replicas = min(3, n)
        voters = ",".join(f"{x.node_id}@127.0.0.1:{x.ports.controller}" for x in self.nodes)
        listeners, advertised, protocols = self._listeners(node)
        config = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": listeners,
            "advertised.listeners": advertised,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(node.directory / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(replicas),
            "auto.create.topics.enable": "false",
            # Internal topics: fewer partitions than the default 50 make the first group
            # join and the first transaction fast on a laptop; replicated when possible.
            "offsets.topic.num.partitions": "10",
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min(2, replicas)),
            "group.initial.rebalance.delay.ms": "0",
            # Let workers ask for sessions shorter than the 6 s a default broker allows, so
            # a dead worker's partitions move within seconds (runtime/failover.py).
            "group.min.session.timeout.ms": "1000",
            # Detect a dead node quickly, so fault tests see leaders move in seconds.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "6000",
            "num.network.threads": "3",
            "num.io.threads": "4",
            "log.message.timestamp.type": "CreateTime",
        }
        config.update(self._security_config())
        config.update(self.extra_config)
        node.directory.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{k}={v}\n" for k, v in config.items())
        (node.directory / "server.properties").write_text(text, encoding="utf-8")


def _pem_value(path: Path) -> str:
    """A PEM file as one ``server.properties`` value (newlines escaped as ``\\n``)."""
    return path.read_text(encoding="ascii").strip().replace("\n", "\\n")


def _logging_flags(node: KafkaNode) -> list[str]:
    """JVM flags that send a node's log4j2 output to ``<node dir>/logs``."""
    log4j = files("streamfold.embedded").joinpath("log4j2.properties")
    return [f"-Dkafka.logs.dir={node.directory / 'logs'}", f"-Dlog4j2.configurationFile={log4j}"]


def _tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
