"""``streamfold schemas``: the Avro contracts of the domain models and their registry subjects.

``generate`` writes the checked-in ``schemas/`` tree; ``check``, ``register``, ``diff`` and
``list`` work against any Confluent-compatible schema registry (``--registry`` or
``STREAMFOLD_REGISTRY_URL``, with optional HTTP basic auth).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient

from streamfold.cli.edge import registry_settings, setup_logging
from streamfold.contracts.evolution import (
    CheckStatus,
    SubjectCheck,
    check_plan,
    connect,
    diff_plan,
    list_subjects,
    planned_schemas,
    register_plan,
)
from streamfold.contracts.schema_files import (
    DEFAULT_TOPOLOGY_PACKAGE,
    discover_contexts,
    load_contexts,
    stale_schema_files,
    write_schema_files,
)
from streamfold.domain.context import BoundedContext

app = typer.Typer(
    help="Avro contracts of the domain models and their schema registry subjects.",
    no_args_is_help=True,
)

ContextOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--context",
        "-c",
        help="A context as module:attribute (or a module, for all of its contexts). "
        f"Default: every context in the sub-packages of {DEFAULT_TOPOLOGY_PACKAGE}/.",
    ),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", help="Schema registry URL (env STREAMFOLD_REGISTRY_URL)."),
]
UsernameOpt = Annotated[
    str | None,
    typer.Option("--username", help="Basic auth user (env STREAMFOLD_REGISTRY_USERNAME)."),
]
PasswordOpt = Annotated[
    str | None,
    typer.Option("--password", help="Basic auth password (env STREAMFOLD_REGISTRY_PASSWORD)."),
]


@app.callback()
def schemas() -> None:
    """Generate the Avro contracts in schemas/ and evolve them in the schema registry."""


def _contexts(specs: list[str] | None) -> list[BoundedContext]:
    # Topology packages live in the project, not in site-packages: import them from here.
    sys.path.insert(0, str(Path.cwd()))
    contexts = load_contexts(specs) if specs else discover_contexts()
    if not contexts:
        typer.secho("no bounded contexts found", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(1)
    return contexts


def _client(url: str | None, username: str | None, password: str | None) -> SchemaRegistryClient:
    setup_logging()
    if logging.getLogger().level > logging.DEBUG:  # one line per HTTP request drowns the report
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return connect(registry_settings(url, username, password))


def _fail_incompatible(checks: list[SubjectCheck], what: str) -> None:
    failing = [c for c in checks if c.status is CheckStatus.INCOMPATIBLE]
    if failing:
        typer.secho(
            f"{len(failing)} subject(s) incompatible: {what}", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(1)


@app.command("generate")
def generate(
    context: ContextOpt = None,
    out: Annotated[Path, typer.Option(help="Schema tree to write.")] = Path("schemas"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the tree is stale.")
    ] = False,
) -> None:
    """Write schemas/<context>/<Name>.avsc for every command, event and state."""
    contexts = _contexts(context)
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


@app.command("list")
def list_(
    registry: RegistryOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include soft-deleted ones.")] = False,
) -> None:
    """List the registry's subjects with latest version, id and compatibility level."""
    infos = list_subjects(_client(registry, username, password), deleted=deleted)
    if not infos:
        typer.echo("no subjects")
        return
    width = max(len(info.subject) for info in infos)
    typer.echo(f"{'subject':<{width}}  version  id      level")
    for info in infos:
        mark = "  (deleted)" if info.deleted else ""
        typer.echo(
            f"{info.subject:<{width}}  {info.version:<7}  {info.schema_id:<6}  {info.level}{mark}"
        )


@app.command("check")
def check(
    context: ContextOpt = None,
    registry: RegistryOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Check every model's schema against its subject; exit 1 if any is incompatible."""
    contexts = _contexts(context)
    checks = check_plan(_client(registry, username, password), planned_schemas(contexts))
    for item in checks:
        for line in item.describe():
            typer.echo(line)
    counts = Counter(c.status for c in checks)
    typer.echo(", ".join(f"{counts[status]} {status}" for status in CheckStatus))
    _fail_incompatible(checks, "fix the models or evolve them compatibly")


@app.command("register")
def register(
    context: ContextOpt = None,
    registry: RegistryOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Check, then register every new or changed schema; nothing when any is incompatible."""
    contexts = _contexts(context)
    client = _client(registry, username, password)
    checks = check_plan(client, planned_schemas(contexts))
    for item in checks:
        if item.status is CheckStatus.INCOMPATIBLE:
            for line in item.describe():
                typer.echo(line)
    _fail_incompatible(checks, "nothing registered")
    registered = register_plan(client, checks)
    for done in registered:
        typer.echo(f"{done.subject}: registered version {done.version}, id {done.schema_id}")
    unchanged = len(checks) - len(registered)
    typer.echo(f"{len(registered)} registered, {unchanged} unchanged")


@app.command("diff")
def diff(
    context: ContextOpt = None,
    registry: RegistryOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Show how each model's schema differs from the latest registered under its subject."""
    contexts = _contexts(context)
    diffs = diff_plan(_client(registry, username, password), planned_schemas(contexts))
    changed = [d for d in diffs if d.diff]
    for item in changed:
        state = f"version {item.version}" if item.version is not None else "new subject"
        typer.echo(f"{item.subject} ({state}):")
        for line in item.changes.describe():
            typer.echo(f"  {line}")
        typer.echo(item.diff)
    typer.echo(f"{len(changed)} of {len(diffs)} subject(s) differ from the registry")
