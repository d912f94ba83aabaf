"""``streamfold dev``: the local stack (a real Kafka broker, the schema registry, and per
topology its worker, its sink into chDB and its command gateway)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from streamfold.cli.edge import default_cache_dir, default_home, setup_logging
from streamfold.embedded.stack import (
    DevStackSettings,
    StackState,
    read_state,
    run_supervisor,
    start_detached,
    stop_stack,
)

app = typer.Typer(help="Run the local development stack.", no_args_is_help=True)
console = Console()

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="Stack data directory (env STREAMFOLD_HOME).")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache for fetched jars (env STREAMFOLD_CACHE_DIR)."),
]
KafkaPortOpt = Annotated[int, typer.Option("--kafka-port", help="Broker listener port.")]
ControllerPortOpt = Annotated[
    int, typer.Option("--controller-port", help="KRaft controller listener port.")
]
HeapOpt = Annotated[int, typer.Option("--kafka-heap-mb", help="Broker JVM heap (MB).")]
RegistryPortOpt = Annotated[int, typer.Option("--registry-port", help="Schema registry port.")]
WorkerPortOpt = Annotated[
    int, typer.Option("--worker-port", help="First worker's health/metrics port.")
]
SinkPortOpt = Annotated[int, typer.Option("--sink-port", help="First sink's health port.")]
GatewayPortOpt = Annotated[int, typer.Option("--gateway-port", help="First gateway's port.")]


def _settings(
    home: Path | None,
    cache_dir: Path | None,
    kafka_port: int,
    controller_port: int,
    heap: int,
    registry_port: int,
    worker_port: int,
    sink_port: int,
    gateway_port: int,
) -> DevStackSettings:
    return DevStackSettings(
        home=(home or default_home()).absolute(),
        cache_dir=cache_dir or default_cache_dir(),
        kafka_port=kafka_port,
        controller_port=controller_port,
        kafka_heap_mb=heap,
        java_home=os.environ.get("JAVA_HOME"),
        registry_port=registry_port,
        worker_port=worker_port,
        sink_port=sink_port,
        gateway_port=gateway_port,
        # Every topology of the project this is run from (topologies/<name>/topology.yaml).
        topologies=tuple(sorted(p.parent.name for p in Path("topologies").glob("*/topology.yaml"))),
    )


@app.command()
def up(
    home: HomeOpt = None,
    cache_dir: CacheOpt = None,
    kafka_port: KafkaPortOpt = 9092,
    controller_port: ControllerPortOpt = 9093,
    kafka_heap_mb: HeapOpt = 1024,
    registry_port: RegistryPortOpt = 8081,
    worker_port: WorkerPortOpt = 8090,
    sink_port: SinkPortOpt = 8095,
    gateway_port: GatewayPortOpt = 8000,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run in this terminal; Ctrl-C stops it.")
    ] = False,
) -> None:
    """Start the local stack in the background (or the foreground) and wait until ready."""
    setup_logging()
    settings = _settings(
        home,
        cache_dir,
        kafka_port,
        controller_port,
        kafka_heap_mb,
        registry_port,
        worker_port,
        sink_port,
        gateway_port,
    )
    if foreground:
        run_supervisor(settings)
        return
    state = start_detached(settings)
    console.print(
        f"[green]dev stack up[/green]: kafka at [bold]{state.bootstrap_servers}[/bold], "
        f"schema registry at [bold]{state.registry_url}[/bold], "
        f"workers: {', '.join(state.workers) or 'none'} "
        f"(ready in {state.ready_seconds}s; data in {settings.home})"
    )
    for topology, url in state.gateways.items():
        console.print(
            f"[green]{topology} gateway[/green] at [bold]{url}[/bold], "
            f"docs at [bold]{url}/docs[/bold]"
        )


@app.command(hidden=True)
def supervise(
    home: HomeOpt = None,
    cache_dir: CacheOpt = None,
    kafka_port: KafkaPortOpt = 9092,
    controller_port: ControllerPortOpt = 9093,
    kafka_heap_mb: HeapOpt = 1024,
    registry_port: RegistryPortOpt = 8081,
    worker_port: WorkerPortOpt = 8090,
    sink_port: SinkPortOpt = 8095,
    gateway_port: GatewayPortOpt = 8000,
) -> None:
    """Own the stack's processes until SIGTERM (started by ``dev up``)."""
    setup_logging()
    run_supervisor(
        _settings(
            home,
            cache_dir,
            kafka_port,
            controller_port,
            kafka_heap_mb,
            registry_port,
            worker_port,
            sink_port,
            gateway_port,
        )
    )


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop the local stack; no process of it is left behind."""
    setup_logging()
    if stop_stack((home or default_home()).absolute()):
        console.print("[green]dev stack stopped[/green]")
    else:
        console.print("dev stack is not running")


@app.command()
def status(home: HomeOpt = None) -> None:
    """Show the stack's components and whether each answers."""
    state = read_state((home or default_home()).absolute())
    if state is None:
        console.print("dev stack is not running (start it with `streamfold dev up`)")
        raise typer.Exit(code=3)
    table = Table("component", "address", "pids", "answers")
    try:
        metadata = AdminClient({"bootstrap.servers": state.bootstrap_servers}).list_topics(
            timeout=5
        )
        answers = f"yes ({len(metadata.brokers)} broker(s), {len(metadata.topics)} topics)"
    except KafkaException as exc:
        answers = f"no: {exc}"
    table.add_row("kafka", state.bootstrap_servers, ",".join(map(str, state.kafka_pids)), answers)
    table.add_row("schema registry", state.registry_url, str(state.registry_pid), _registry(state))
    for topology, pid in state.workers.items():
        table.add_row(f"worker {topology}", "-", str(pid), "yes" if _alive(pid) else "no")
    for topology, pid in state.sinks.items():
        table.add_row(f"sink {topology}", "-", str(pid), "yes" if _alive(pid) else "no")
    for topology, url in state.gateways.items():
        table.add_row(
            f"gateway {topology}",
            url,
            str(state.gateway_pids.get(topology, "-")),
            _answers(f"{url}/readyz"),
        )
    table.add_row("supervisor", "-", str(state.supervisor_pid), "yes")
    console.print(table)


def _answers(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return "yes"
    except (urllib.error.URLError, OSError) as exc:
        return f"no: {exc}"


def _registry(state: StackState) -> str:
    try:
        with urllib.request.urlopen(f"{state.registry_url}/subjects", timeout=5) as response:
            return f"yes ({len(json.loads(response.read()))} subjects)"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"no: {exc}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
