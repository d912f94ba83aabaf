"""``streamfold projections``: the ClickHouse DDL of a connector, generated and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamfold.errors import ConfigurationError

app = typer.Typer(help="ClickHouse projections: their DDL.", no_args_is_help=True)


@app.command("ddl")
def ddl(
    spec: Annotated[str, typer.Argument(help="sink.yaml, its directory, or a context name.")] = (
        "retail"
    ),
    check: Annotated[
        bool, typer.Option(help="Fail if the checked-in SQL differs from the models.")
    ] = False,
) -> None:
    """Write ``connectors/<context>/<context>.sql`` from the models' Avro schemas (or check it).

    The sink creates the same tables itself; the file is for review (and for a DBA who
    creates them by hand on a server).
    """
    from streamfold.cli.edge import connector_spec  # noqa: PLC0415
    from streamfold.sink.ddl import projection_ddl  # noqa: PLC0415

    connector = connector_spec(spec)
    context = connector.load_context()
    path = Path("connectors") / context.name / f"{context.name}.sql"
    text = projection_ddl(context, connector.database_name(context))
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            raise ConfigurationError(
                f"{path} is stale: run `streamfold projections ddl {spec}` and review the diff"
            )
        typer.echo(f"{path} is up to date")
        return
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")


@app.command("rebuild")
def rebuild(
    table: Annotated[str, typer.Argument(help="An events or state_last table to rebuild.")],
    spec: Annotated[str, typer.Option(help="The connector spec (sink.yaml, dir or context).")] = (
        "retail"
    ),
    target: Annotated[str | None, typer.Option(help="Override the spec's target.")] = None,
    topic_prefix: Annotated[str | None, typer.Option(help="Override the topic prefix.")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    registry: Annotated[str | None, typer.Option(help="Schema registry URL.")] = None,
) -> None:
    """Replay the events topic into a fresh table and swap it in atomically.

    Stop the connector's sink first; it resumes where it was afterwards (see
    streamfold.sink.rebuild).
    """

    from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415
    from rich.progress import Progress  # noqa: PLC0415

    from streamfold.cli.edge import connector_spec, kafka_settings, registry_settings  # noqa: PLC0415
    from streamfold.contracts.codec import AvroCodec  # noqa: PLC0415
    from streamfold.contracts.registry import ConfluentSchemaRegistry  # noqa: PLC0415
    from streamfold.sink.rebuild import rebuild as run_rebuild  # noqa: PLC0415

    connector = connector_spec(spec, target=target, topic_prefix=topic_prefix)
    context = connector.load_context()
    clickhouse = connector.open_target(context)
    codec = AvroCodec(
        ConfluentSchemaRegistry(SchemaRegistryClient(registry_settings(registry).client_config()))
    )
    try:
        with Progress() as progress:
            task = progress.add_task(f"rebuilding {table}", total=None)
            rows = run_rebuild(
                connector,
                context,
                kafka_settings(bootstrap),
                codec,
                clickhouse,
                table,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
    finally:
        clickhouse.close()
    typer.echo(f"{table} rebuilt: {rows:,} rows, swapped in")
