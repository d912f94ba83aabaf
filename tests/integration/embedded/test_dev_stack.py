"""``streamfold dev up | status | down`` run a real broker and leave no JVM behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from streamfold.embedded.ports import free_ports

pytestmark = pytest.mark.integration


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfold", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _jvms_under(path: Path) -> list[psutil.Process]:
    """Java processes whose command line mentions ``path``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "java" in (proc.info["name"] or "") and str(path) in cmdline:
            found.append(proc)
    return found


def _wait_gone(path: Path, timeout: float = 20) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [
            p for p in _jvms_under(path) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]
        if not left:
            return []
        time.sleep(0.2)
    return left


def test_up_status_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    kafka_port, controller_port, registry_port, worker_port, sink_port, gateway_port = free_ports(6)
    ports = [
        "--sink-port",
        str(sink_port),
        "--gateway-port",
        str(gateway_port),
        "--kafka-port",
        str(kafka_port),
        "--controller-port",
        str(controller_port),
        "--registry-port",
        str(registry_port),
        "--worker-port",
        str(worker_port),
    ]
    up = _cli("dev", "up", "--home", str(home), *ports)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        state = json.loads((home / "stack.json").read_text())
        # Every listener of the stack (broker, registry, worker, sink, gateway) is local.
        stack = psutil.Process(state["supervisor_pid"]).children(recursive=True)
        listening = {
            (process.name(), listener.laddr.ip, listener.laddr.port)
            for process in stack
            for listener in process.net_connections(kind="inet")
            if listener.status == psutil.CONN_LISTEN
        }
        assert {port for _, _, port in listening} >= {kafka_port, worker_port, sink_port}
        assert {ip for _, ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
        assert state["bootstrap_servers"] == f"127.0.0.1:{kafka_port}"
        kcat = shutil.which("kcat")
        assert kcat is not None, "kcat not found: the set-up script installs it"
        listing = subprocess.run(
            [kcat, "-L", "-b", f"127.0.0.1:{kafka_port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert f"broker 1 at 127.0.0.1:{kafka_port}" in listing
        status = _cli("dev", "status", "--home", str(home))
        assert status.returncode == 0
        assert "yes (1 broker(s)" in status.stdout
        # The schema registry joins the stack and answers Confluent clients.
        assert state["registry_url"] == f"http://127.0.0.1:{registry_port}"
        client = SchemaRegistryClient({"url": state["registry_url"]})
        schema = Schema('{"type": "record", "name": "R", "fields": []}', "AVRO")
        assert client.register_schema("dev-value", schema) >= 1
        assert "worker retail" in _cli("dev", "status", "--home", str(home)).stdout
        # The gateway: its URL and docs are printed, and it takes a command over HTTP.
        gateway = f"http://127.0.0.1:{gateway_port}"
        assert f"retail gateway at {gateway}, docs at {gateway}/docs" in " ".join(up.stdout.split())
        answer = httpx.post(
            f"{gateway}/retail/supplier/register_supplier",
            json={"supplier_id": "dev-1", "name": "Dev"},
            headers={"Wait-Stage": "projected"},
            timeout=60,
        )
        assert (answer.status_code, answer.json()["stage"]) == (200, "projected"), answer.text
        stock = httpx.get(f"{gateway}/retail/supplier/dev-1/state", timeout=30)
        assert stock.json()["state"]["name"] == "Dev"
        assert "gateway retail" in _cli("dev", "status", "--home", str(home)).stdout
        # The main job: the retail example end to end through the stack's workers.
        demo = subprocess.run(
            [sys.executable, "-m", "topologies.retail.demo"],
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
            env={
                **os.environ,
                "STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS": state["bootstrap_servers"],
                "STREAMFOLD_REGISTRY_URL": state["registry_url"],
            },
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "insufficient_stock" in demo.stdout
        assert "duplicate" in demo.stdout
        assert "on_hand=5" in demo.stdout  # 12 - 5 - 2
        # `up` again is idempotent: it reports the running stack.
        again = _cli("dev", "up", "--home", str(home), *ports)
        assert again.returncode == 0
        assert _jvms_under(home), "the broker JVM should be running"
    finally:
        down = _cli("dev", "down", "--home", str(home))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert _wait_gone(home, timeout=5) == []
    assert not psutil.pid_exists(state["registry_pid"]) or (
        psutil.Process(state["registry_pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert not (home / "stack.json").exists()
    assert _cli("dev", "status", "--home", str(home)).returncode == 3


def test_taken_port_is_reported_with_its_pid(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        (controller_port,) = free_ports(1)
        result = _cli(
            "dev",
            "up",
            "--home",
            str(tmp_path / "home"),
            "--kafka-port",
            str(port),
            "--controller-port",
            str(controller_port),
            "--registry-port",
            str(free_ports(1)[0]),
        )
    assert result.returncode == 1
    assert f"port {port} is in use by pid {os.getpid()}" in result.stderr + result.stdout
    assert _wait_gone(tmp_path) == []


def test_ctrl_c_in_the_foreground_stops_the_broker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    kafka_port, controller_port, registry_port, worker_port, sink_port, gateway_port = free_ports(6)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamfold",
            "dev",
            "up",
            "--foreground",
            "--home",
            str(home),
            "--kafka-port",
            str(kafka_port),
            "--controller-port",
            str(controller_port),
            "--registry-port",
            str(registry_port),
            "--worker-port",
            str(worker_port),
            "--sink-port",
            str(sink_port),
            "--gateway-port",
            str(gateway_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not (home / "stack.json").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "stack did not become ready"
            time.sleep(0.2)
        assert _jvms_under(home)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _wait_gone(home, timeout=5) == []


def test_sigkill_of_the_parent_takes_the_broker_down(
    tmp_path: Path, streamfold_cache_dir: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from streamfold.embedded.kafka import LocalKafkaCluster
        cluster = LocalKafkaCluster(
            Path({str(tmp_path / "k")!r}), Path({str(streamfold_cache_dir)!r})
        )
        cluster.start()
        print("JVM_PID", cluster.nodes[0].pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("JVM_PID"):
            line = parent.stdout.readline()
            assert line, "the parent exited before starting the broker"
        jvm_pid = int(line.split()[1])
        assert psutil.pid_exists(jvm_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert _wait_gone(tmp_path, timeout=10) == [], "the JVM outlived its SIGKILLed parent"
