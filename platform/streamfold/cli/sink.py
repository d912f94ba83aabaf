"""``streamfold sink <spec>``: project a context's topics into ClickHouse, in this process."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from streamfold.cli.edge import connector_spec, kafka_settings, registry_settings, setup_logging


def _test_hook_file() -> Path | None:
    """STREAMFOLD_SINK_HOLD_BEFORE_INTENT_FILE: a test hook (see SinkConnector)."""
    value = os.environ.get("STREAMFOLD_SINK_HOLD_BEFORE_INTENT_FILE")
    return Path(value) if value else None


def sink(
    spec: Annotated[
        str, typer.Argument(help="sink.yaml, its directory, or a context under connectors/")
    ],
    target: Annotated[
        str | None, typer.Option(help="Override the spec's target (chdb:path or http(s)://).")
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="Override the spec's topic prefix (a deployment's).")
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (env STREAMFOLD_KAFKA_*).")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Schema registry URL (env STREAMFOLD_REGISTRY_URL).")
    ] = None,
    health_port: Annotated[
        int, typer.Option(help="Health, readiness and metrics port; -1 disables, 0 picks one.")
    ] = -1,
    health_host: Annotated[
        str, typer.Option(help="Address of the health server (the chart sets 0.0.0.0).")
    ] = "127.0.0.1",
    instance_id: Annotated[
        str | None,
        typer.Option(
            help="Static group membership: a restart with the same id takes its partitions"
            " back at once (env STREAMFOLD_SINK_INSTANCE_ID; the chart sets the pod's name)."
        ),
    ] = None,
) -> None:
    """Insert state, events, commands and results into ClickHouse until SIGTERM or Ctrl-C.

    The target's password comes from STREAMFOLD_SINK_PASSWORD (never from the spec file).
    """
    from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

    from streamfold.contracts.codec import AvroCodec  # noqa: PLC0415
    from streamfold.contracts.registry import ConfluentSchemaRegistry  # noqa: PLC0415
    from streamfold.observability.health import HealthServer  # noqa: PLC0415
    from streamfold.sink.connector import SinkConnector, SinkMetrics  # noqa: PLC0415
    from streamfold.sink.queries import QueryServer  # noqa: PLC0415

    setup_logging()
    connector = connector_spec(
        spec, target=target, topic_prefix=topic_prefix, instance_id=instance_id
    )
    context = connector.load_context()
    clickhouse = connector.open_target(context)
    client = SchemaRegistryClient(registry_settings(registry).client_config())
    metrics = SinkMetrics()
    runner = SinkConnector(
        connector,
        context,
        kafka_settings(bootstrap),
        AvroCodec(ConfluentSchemaRegistry(client)),
        clickhouse,
        metrics,
        hold_file=_test_hook_file(),
    )
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    health = (
        HealthServer(health_host, health_port, metrics, ready=lambda: runner.ready)
        if health_port >= 0
        else None
    )
    if health is not None:
        health.start()
    # A chDB path has one owner: this process answers `streamfold sql` for it meanwhile.
    queries = QueryServer(clickhouse) if connector.target.startswith("chdb:") else None
    if queries is not None:
        queries.start()
    try:
        runner.run()
    finally:
        if queries is not None:
            queries.stop()
        if health is not None:
            health.stop()
        clickhouse.close()
