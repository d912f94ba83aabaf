"""``streamfold schemas``: generate the checked-in Avro contracts from the domain models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from streamfold.contracts.schema_files import (
    DEFAULT_TOPOLOGY_PACKAGE,
    discover_contexts,
    load_contexts,
    stale_schema_files,
    write_schema_files,
)

app = typer.Typer(help="Avro contracts generated from the domain models.", no_args_is_help=True)


@app.callback()
def schemas() -> None:
    """Generate and check the Avro contracts in schemas/."""


@app.command("generate")
def generate(
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            "-c",
            help="A context as module:attribute (or a module, for all of its contexts). "
            f"Default: every context in the sub-packages of {DEFAULT_TOPOLOGY_PACKAGE}/.",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Schema tree to write.")] = Path("schemas"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the tree is stale.")
    ] = False,
) -> None:
    """Write schemas/<context>/<Name>.avsc for every command, event and state."""
    # Topology packages live in the project, not in site-packages: import them from here.
    sys.path.insert(0, str(Path.cwd()))
    contexts = load_contexts(context) if context else discover_contexts()
    if not contexts:
        typer.secho("no bounded contexts found", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(1)
    names = ", ".join(c.name for c in contexts)
    if check:
        problems = stale_schema_files(contexts, out)
        for problem in problems:
            typer.echo(problem)
        if problems:
            typer.secho(
                f"{out}/ is stale: run `streamfold schemas generate`", fg=typer.colors.RED, err=True
            )
            raise typer.Exit(1)
        typer.echo(f"{out}/ is up to date ({names})")
        return
    changes = write_schema_files(contexts, out)
    for change in changes:
        typer.echo(change)
    typer.echo(f"{len(changes)} change(s) in {out}/ ({names})")
