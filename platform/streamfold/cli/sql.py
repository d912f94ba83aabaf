"""``streamfold sql "<query>"``: run SQL on a connector's ClickHouse target, print a table."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def sql(
    query: Annotated[str, typer.Argument(help="The SQL to run.")],
    spec: Annotated[
        str, typer.Option(help="Connector spec naming the target (sink.yaml, dir or context).")
    ] = "retail",
    target: Annotated[str | None, typer.Option(help="Override the spec's target.")] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Allow a statement that writes (DDL, INSERT).")
    ] = False,
) -> None:
    """Run a query against the target of a sink connector and print the rows.

    On a chDB target, which one process owns at a time, the query goes through the running
    sink's query port (see streamfold.sink.queries); with no sink running it opens the path.
    A query runs read-only, within a time and a row limit, unless ``--write`` is given.
    """
    from streamfold.cli.edge import connector_spec  # noqa: PLC0415
    from streamfold.sink.queries import run_sql  # noqa: PLC0415

    connector = connector_spec(spec, target=target)
    database = connector.database or connector.load_context().name
    password = connector.password.get_secret_value() if connector.password else None
    columns, rows = run_sql(
        connector.target,
        database,
        query,
        write=write,
        username=connector.username,
        password=password,
    )
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)
