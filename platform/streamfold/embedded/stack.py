"""The local development stack, run by one supervisor process.

``streamfold dev up`` starts a detached supervisor (``streamfold dev supervise``) that owns
every component of the stack as its children (a Kafka broker, the schema registry, then per
topology, the example's by default: its worker, its sink into chDB at ``<home>/clickhouse``
when ``connectors/<topology>/sink.yaml`` exists, and its command gateway) and records them in
``<home>/stack.json``.
``streamfold dev down`` sends the supervisor SIGTERM; it stops its children in reverse
order and removes the state file. Because every child is started with
``PR_SET_PDEATHSIG``, even a SIGKILL of the supervisor leaves no JVM behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict

from streamfold.embedded.kafka import LocalKafkaCluster, NodePorts
from streamfold.embedded.ports import ensure_port_free
from streamfold.errors import HostEnvironmentError
from streamfold.gateway.server import GatewayProcess
from streamfold.observability.logging import get_logger
from streamfold.registry.server import RegistryProcess
from streamfold.runtime.process import WorkerProcess
from streamfold.sink.process import SinkProcess

__all__ = [
    "DevStackSettings",
    "StackState",
    "read_state",
    "run_supervisor",
    "start_detached",
    "stop_stack",
]

log = get_logger(__name__)
STATE_FILE = "stack.json"


class DevStackSettings(BaseModel):
    """Where the local stack keeps its data and which ports it listens on."""

    model_config = ConfigDict(frozen=True)

    home: Path
    cache_dir: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    kafka_heap_mb: int = 1024
    java_home: str | None = None
    registry_port: int = 8081
    #: Topologies whose workers the stack runs (names under ``topologies/`` or paths); one
    #: worker each, health on ``worker_port`` and up.
    topologies: tuple[str, ...] = ()
    worker_port: int = 8090
    #: Each topology's sink answers health on ``sink_port`` and up, its gateway HTTP on
    #: ``gateway_port`` and up.
    sink_port: int = 8095
    gateway_port: int = 8000


@dataclass(frozen=True, slots=True)
class StackState:
    """What ``stack.json`` records about a running stack."""

    supervisor_pid: int
    bootstrap_servers: str
    kafka_pids: list[int]
    registry_url: str
    registry_pid: int
    started_at: float
    ready_seconds: float
    workers: dict[str, int] = field(default_factory=dict)  # topology -> pid
    sinks: dict[str, int] = field(default_factory=dict)  # topology -> pid
    gateways: dict[str, str] = field(default_factory=dict)  # topology -> URL
    gateway_pids: dict[str, int] = field(default_factory=dict)  # topology -> pid

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def read_state(home: Path) -> StackState | None:
    """The running stack recorded in ``home``, or None (a stale file is removed)."""
    path = home / STATE_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    state = StackState(**data)
    if not psutil.pid_exists(state.supervisor_pid):
        path.unlink(missing_ok=True)
        return None
    return state


def run_supervisor(settings: DevStackSettings) -> None:
    """Start the stack, record it, and keep it up until SIGTERM or SIGINT."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("stopping dev stack", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = time.monotonic()
    kafka = LocalKafkaCluster(
        settings.home / "kafka",
        settings.cache_dir,
        nodes=1,
        ports=[NodePorts(settings.kafka_port, settings.controller_port)],
        heap_mb=settings.kafka_heap_mb,
        java_home=settings.java_home,
    )
    ensure_port_free(settings.registry_port)
    kafka.start()
    state_path = settings.home / STATE_FILE
    registry = RegistryProcess(
        kafka.bootstrap_servers, settings.registry_port, log_file=settings.home / "registry.log"
    )
    workers: dict[str, WorkerProcess] = {}
    sinks: dict[str, SinkProcess] = {}
    gateways: dict[str, GatewayProcess] = {}
    try:
        registry.start()
        assert registry.process is not None
        for n, topology in enumerate(settings.topologies):
            worker = WorkerProcess(
                topology,
                bootstrap_servers=kafka.bootstrap_servers,
                registry_url=registry.url,
                instance_id=f"dev-{n}",
                state_dir=settings.home / "state",
                health_port=settings.worker_port + n,
                log_file=settings.home / f"worker-{n}.log",
            )
            worker.start(timeout=120)
            workers[topology] = worker
            connector = Path("connectors") / Path(topology).name
            target = f"chdb:{settings.home / 'clickhouse'}"
            if (connector / "sink.yaml").exists():
                sink = SinkProcess(
                    connector,
                    bootstrap_servers=kafka.bootstrap_servers,
                    registry_url=registry.url,
                    health_port=settings.sink_port + n,
                    target=target,
                    log_file=settings.home / f"sink-{n}.log",
                )
                sink.start(timeout=180)
                sinks[topology] = sink
            gateway = GatewayProcess(
                topology,
                bootstrap_servers=kafka.bootstrap_servers,
                registry_url=registry.url,
                port=settings.gateway_port + n,
                connectors_dir=connector,
                clickhouse_target=target,
                log_file=settings.home / f"gateway-{n}.log",
            )
            gateway.start(timeout=120)
            gateways[topology] = gateway
        state = StackState(
            supervisor_pid=os.getpid(),
            bootstrap_servers=kafka.bootstrap_servers,
            kafka_pids=[n.pid for n in kafka.nodes if n.pid is not None],
            registry_url=registry.url,
            registry_pid=registry.process.pid,
            workers={t: w.pid for t, w in workers.items() if w.pid is not None},
            sinks={t: p.pid for t, p in sinks.items() if p.pid is not None},
            gateways={t: g.url for t, g in gateways.items()},
            gateway_pids={t: g.pid for t, g in gateways.items() if g.pid is not None},
            started_at=time.time(),
            ready_seconds=round(time.monotonic() - started, 2),
        )
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(state.to_json(), encoding="utf-8")
        tmp.replace(state_path)
        log.info("dev stack ready", bootstrap=kafka.bootstrap_servers, registry=registry.url)
        while not stop.wait(1.0):
            for node in kafka.nodes:
                if not node.is_running():
                    raise HostEnvironmentError(
                        f"kafka node {node.node_id} exited unexpectedly\n{node.log_tail()}"
                    )
            if registry.process.poll() is not None:
                raise HostEnvironmentError(
                    f"the schema registry exited unexpectedly; see {registry.log_file}"
                )
            children = [*workers.items(), *sinks.items(), *gateways.items()]
            for topology, child in children:
                if not child.running():
                    raise HostEnvironmentError(
                        f"the {topology} {child.name} exited unexpectedly; see {child.log_file}"
                    )
    finally:
        for gateway in gateways.values():
            gateway.stop()
        for sink in sinks.values():
            sink.stop()
        for worker in workers.values():
            worker.stop()
        registry.stop()
        kafka.stop()
        state_path.unlink(missing_ok=True)
        log.info("dev stack stopped")


def start_detached(settings: DevStackSettings, timeout: float = 180.0) -> StackState:
    """Start a supervisor in the background and wait until the stack is ready."""
    running = read_state(settings.home)
    if running is not None:
        return running
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "supervisor.log"
    cmd = [
        sys.executable,
        "-m",
        "streamfold",
        "dev",
        "supervise",
        "--home",
        str(settings.home),
        "--cache-dir",
        str(settings.cache_dir),
        "--kafka-port",
        str(settings.kafka_port),
        "--controller-port",
        str(settings.controller_port),
        "--kafka-heap-mb",
        str(settings.kafka_heap_mb),
        "--registry-port",
        str(settings.registry_port),
        "--worker-port",
        str(settings.worker_port),
        "--sink-port",
        str(settings.sink_port),
        "--gateway-port",
        str(settings.gateway_port),
    ]
    env = dict(os.environ)
    if settings.java_home:
        env["JAVA_HOME"] = settings.java_home
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(settings.home)
        if state is not None and state.supervisor_pid == proc.pid:
            return state
        if proc.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
            raise HostEnvironmentError("the dev stack failed to start:\n" + "\n".join(tail))
        time.sleep(0.2)
    proc.terminate()
    raise HostEnvironmentError(f"the dev stack was not ready within {timeout:.0f}s; see {log_path}")


def stop_stack(home: Path, timeout: float = 60.0) -> bool:
    """Stop the stack recorded in ``home``; True if one was running."""
    state = read_state(home)
    if state is None:
        return False
    os.kill(state.supervisor_pid, signal.SIGTERM)
    pids = [
        state.supervisor_pid,
        state.registry_pid,
        *state.workers.values(),
        *state.sinks.values(),
        *state.gateway_pids.values(),
        *state.kafka_pids,
    ]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            log.warning("process did not stop in time; killing it", pid=pid)
            os.kill(pid, signal.SIGKILL)
    (home / STATE_FILE).unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
