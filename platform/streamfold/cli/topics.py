"""``streamfold topics``: list, create and describe Kafka topics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamfold.cli.edge import kafka_settings, setup_logging
from streamfold.errors import ConfigurationError
from streamfold.transport.admin import KafkaAdmin, TopicSpec

app = typer.Typer(help="Manage Kafka topics.", no_args_is_help=True)
console = Console()

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap", "-b", help="Bootstrap servers (env STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS)."
    ),
]


@app.command("list")
def list_(
    bootstrap: BootstrapOpt = None,
    internal: Annotated[bool, typer.Option(help="Include internal topics (__*).")] = False,
) -> None:
    """List topic names."""
    setup_logging()
    for name in KafkaAdmin(kafka_settings(bootstrap)).list_topics(include_internal=internal):
        typer.echo(name)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    partitions: Annotated[int, typer.Option("--partitions", "-p", min=1)] = 1,
    replication_factor: Annotated[int, typer.Option("--replication-factor", "-r", min=1)] = 1,
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="Topic config KEY=VALUE, repeatable.")
    ] = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Create a topic (an existing one is an error)."""
    setup_logging()
    configs: dict[str, str] = {}
    for item in config or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--config expects KEY=VALUE, got {item!r}")
        configs[key] = value
    spec = TopicSpec(name, partitions, replication_factor, configs)
    KafkaAdmin(kafka_settings(bootstrap)).create_topics([spec], exist_ok=False)
    console.print(f"created [bold]{name}[/bold] ({partitions} partitions, rf {replication_factor})")


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    bootstrap: BootstrapOpt = None,
) -> None:
    """Show partitions, leaders, replicas, ISR and non-default configuration."""
    setup_logging()
    info = KafkaAdmin(kafka_settings(bootstrap)).describe(name)
    table = Table("partition", "leader", "replicas", "isr", title=name)
    for p in info.partitions:
        table.add_row(
            str(p.id), str(p.leader), ",".join(map(str, p.replicas)), ",".join(map(str, p.isrs))
        )
    console.print(table)
    for key, value in info.config.items():
        console.print(f"  {key} = {value}")
