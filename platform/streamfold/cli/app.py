"""Root Typer application: mounts every command group."""

from __future__ import annotations

import sys

import typer

from streamfold.errors import StreamfoldError

app = typer.Typer(
    name="streamfold",
    help="Kafka-native CQRS / event sourcing: write the domain model, streamfold runs it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _mount() -> None:
    from streamfold.cli import (  # noqa: PLC0415
        demo,
        deploy,
        dev,
        dlq,
        gateway,
        projections,
        registry,
        schemas,
        sink,
        sql,
        state,
        topics,
        worker,
    )

    app.add_typer(dev.app, name="dev")
    app.add_typer(topics.app, name="topics")
    app.add_typer(schemas.app, name="schemas")
    app.add_typer(registry.app, name="registry")
    app.command("worker")(worker.worker)
    app.command("sink")(sink.sink)
    app.command("sql")(sql.sql)
    app.command("demo")(demo.demo)
    app.command("gateway")(gateway.gateway)
    app.command("send")(gateway.send)
    app.add_typer(projections.app, name="projections")
    app.add_typer(dlq.app, name="dlq")
    app.add_typer(state.app, name="state")
    app.add_typer(deploy.app, name="deploy")


def main() -> None:
    """Run the CLI; a streamfold error becomes one readable line and exit code 1."""
    _mount()
    try:
        app()
    except StreamfoldError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
