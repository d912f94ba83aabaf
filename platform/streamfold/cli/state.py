"""``streamfold state get <aggregate> <id>``: an aggregate's current state, as committed.

It reads the aggregate's changelog partition (the compacted topic every worker store is
restored from): the last committed entry under the id is the state after the last committed
command, whichever worker owns the partition and whether or not one runs. It costs a scan of
one compacted partition, so it is a tool for people, not a query path for programs (those
read the state topic or the ClickHouse projection).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from streamfold.cli.edge import kafka_settings, registry_settings, setup_logging

app = typer.Typer(help="Read aggregate state.", no_args_is_help=True)


@app.callback()
def state() -> None:
    """Read aggregates' current state from their changelogs."""


@app.command("get")
def get(
    aggregate: Annotated[str, typer.Argument(help="Aggregate name, e.g. store_stock.")],
    aggregate_id: Annotated[str, typer.Argument(metavar="ID", help="The aggregate id.")],
    topology: Annotated[
        str, typer.Option(help="Topology file, directory or name under topologies/.")
    ] = "retail",
    prefix: Annotated[str, typer.Option(help="Topic prefix of the deployment.")] = "",
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    registry: Annotated[str | None, typer.Option(help="Schema registry URL.")] = None,
) -> None:
    """Print an aggregate's version, deleted flag and state as JSON (exit 3: not found)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

    from streamfold.contracts.codec import AvroCodec  # noqa: PLC0415
    from streamfold.contracts.registry import ConfluentSchemaRegistry  # noqa: PLC0415
    from streamfold.domain.naming import aggregate_topics  # noqa: PLC0415
    from streamfold.runtime.topology import load_topology  # noqa: PLC0415
    from streamfold.state.entry import AggregateEntry  # noqa: PLC0415
    from streamfold.transport.partitioning import partition_for  # noqa: PLC0415
    from streamfold.transport.reading import (  # noqa: PLC0415
        partitions_of,
        reader,
        scan,
        watermarks,
    )

    setup_logging()
    sys.path.insert(0, str(Path.cwd()))
    spec = load_topology(topology)
    context = spec.load_context()
    found = context.get(aggregate)
    changelog = aggregate_topics(context.name, found.name, prefix).changelog
    key = aggregate_id.encode()
    settings = kafka_settings(bootstrap)
    last: bytes | None = None
    seen = False
    with reader(settings) as consumer:
        partition = partition_for(key, len(partitions_of(consumer, changelog)))
        low, high = watermarks(consumer, changelog, partition)
        for message in scan(consumer, changelog, {partition: (low, high)}, timeout=60):
            if message.key() == key:
                seen, last = True, message.value()
    if not seen or last is None:
        typer.secho(f"no {aggregate} {aggregate_id!r} in {changelog}", err=True)
        raise typer.Exit(3)
    entry = AggregateEntry.decode(last)
    codec = AvroCodec(
        ConfluentSchemaRegistry(SchemaRegistryClient(registry_settings(registry).client_config()))
    )
    state_json = None
    if entry.state is not None:
        model = codec.reader(found.state_type, namespace=context.namespace).decode(entry.state)
        state_json = model.model_dump(mode="json")
    typer.echo(
        json.dumps(
            {
                "aggregate": found.name,
                "id": aggregate_id,
                "version": entry.version,
                "deleted": entry.deleted,
                "state": state_json,
            },
            indent=2,
        )
    )
