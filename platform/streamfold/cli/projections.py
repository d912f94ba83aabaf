"""``streamfold projections``: the ClickHouse DDL of a connector, generated and checked."""

from __future__ import annotations

import sys
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
    from streamfold.sink.ddl import projection_ddl  # noqa: PLC0415
    from streamfold.sink.spec import load_connector  # noqa: PLC0415

    sys.path.insert(0, str(Path.cwd()))
    connector = load_connector(spec)
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
