"""``streamfold worker <topology>``: run a topology's aggregates, sagas and event handlers
in this process (each handler in a consumer group and a thread of its own)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from streamfold.cli.edge import kafka_settings, registry_settings, setup_logging
from streamfold.errors import ConfigurationError


def worker(
    topology: Annotated[
        str, typer.Argument(help="topology.yaml, its directory, or a name under topologies/")
    ],
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (env STREAMFOLD_KAFKA_*).")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Schema registry URL (env STREAMFOLD_REGISTRY_URL).")
    ] = None,
) -> None:
    """Process the topology's commands exactly once until SIGTERM or Ctrl-C.

    Settings: env STREAMFOLD_WORKER_* over the topology file's ``worker:`` section
    (instance_id, state_dir, commit_interval_ms, max_batch, health_port, ...); tracing
    STREAMFOLD_TRACING_* (spans are made only when an OTLP endpoint is set).
    """
    setup_logging()
    # First: refused credentials or certificates stop the worker before its heavy imports.
    kafka = kafka_settings(bootstrap)
    # Imported here: the CLI's other commands need none of the worker's dependencies.
    from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

    from streamfold.contracts.codec import AvroCodec  # noqa: PLC0415
    from streamfold.contracts.registry import ConfluentSchemaRegistry  # noqa: PLC0415
    from streamfold.observability.health import HealthServer  # noqa: PLC0415
    from streamfold.observability.metrics import WorkerMetrics  # noqa: PLC0415
    from streamfold.observability.tracing import TracingSettings, configure_tracing  # noqa: PLC0415
    from streamfold.runtime.handler_worker import HandlerWorker  # noqa: PLC0415
    from streamfold.runtime.settings import WorkerSettings  # noqa: PLC0415
    from streamfold.runtime.supervisor import Runner, Supervisor  # noqa: PLC0415
    from streamfold.runtime.topology import load_topology  # noqa: PLC0415
    from streamfold.runtime.worker import AggregateWorker  # noqa: PLC0415

    sys.path.insert(0, str(Path.cwd()))  # topology packages live in the project
    spec = load_topology(topology)
    context = spec.load_context()
    try:
        settings = WorkerSettings.resolve(spec.worker)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid worker settings: {exc}") from exc
    try:
        configure_tracing("streamfold-worker", TracingSettings())  # spans only if exported
    except ValidationError as exc:
        raise ConfigurationError(f"invalid tracing settings: {exc}") from exc
    client = SchemaRegistryClient(registry_settings(registry).client_config())
    metrics = WorkerMetrics()
    codec = AvroCodec(ConfluentSchemaRegistry(client))
    runners: list[Runner] = []
    if spec.select(context) or spec.select_sagas(context):
        runners.append(AggregateWorker(spec, context, settings, kafka, codec, metrics))
    for handler in spec.select_handlers(context):
        runners.append(HandlerWorker(spec, context, handler, settings, kafka, codec, metrics))
    if not runners:
        raise ConfigurationError(f"topology {spec.name!r} runs no aggregate, saga or handler")
    runner = Supervisor(runners)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    health = (
        HealthServer(
            settings.health_host, settings.health_port, metrics, ready=lambda: runner.ready
        )
        if settings.health_port >= 0
        else None
    )
    if health is not None:
        health.start()
    try:
        runner.run()
    finally:
        if health is not None:
            health.stop()
