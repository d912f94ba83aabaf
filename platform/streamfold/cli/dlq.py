"""``streamfold dlq``: list, show and replay the dead letters of a bounded context; list,
retry and skip the aggregates an event handler has parked.

A context's dead letters live on ``{context}.dlq``; ``--topic`` names a dead-letter topic
directly instead. A dead letter is addressed by ``partition:offset``, as ``list`` prints it.
``replay`` sends the original bytes back to the source topic, or bytes from a file, or a
JSON document encoded as one of the context's command types over the schema registry.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamfold.cli.edge import kafka_settings, registry_settings, setup_logging
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.contracts.schema_files import discover_contexts, load_contexts
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command
from streamfold.domain.naming import context_topics, handler_topics
from streamfold.errors import ConfigurationError
from streamfold.runtime.dead_letters import (
    DeadLetter,
    confluent_schema_id,
    find_dead_letter,
    read_dead_letters,
    replay,
)

__all__ = ["app", "parse_position"]

app = typer.Typer(help="Inspect and replay dead letters ({context}.dlq).", no_args_is_help=True)

ERROR_WIDTH = 60  # characters of the error ``list`` shows; ``show`` prints it whole

ContextArg = Annotated[
    str | None,
    typer.Argument(
        metavar="CONTEXT",
        help="Bounded context name; its dead letters are on {context}.dlq.",
        show_default=False,
    ),
]
TopicOpt = Annotated[
    str | None,
    typer.Option("--topic", "-t", help="A dead-letter topic, instead of a context's."),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap", "-b", help="Bootstrap servers (env STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS)."
    ),
]


def parse_position(text: str) -> tuple[int, int]:
    """Parse ``partition:offset`` (as ``dlq list`` prints it) into two non-negative ints."""
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ConfigurationError(
            f"a dead letter is addressed as partition:offset (e.g. 0:42), not {text!r}"
        )
    return int(partition), int(offset)


def _dlq_topic(context: str | None, topic: str | None) -> str:
    if context is not None and topic is not None:
        raise ConfigurationError(f"give a context or --topic, not both ({context!r}, {topic!r})")
    if topic is not None:
        return topic
    if context is None:
        raise ConfigurationError("name a bounded context, or a dead-letter topic with --topic")
    return context_topics(context).dlq


def _addressed(
    context: str | None, position: str | None, topic: str | None
) -> tuple[str, str | None, int, int]:
    """The dlq topic, the context name (if given) and the dead letter's partition and offset.

    With ``--topic`` the position is the only argument, so it arrives as ``context``.
    """
    if topic is not None and position is None and context is not None:
        context, position = None, context
    if position is None:
        raise ConfigurationError("name the dead letter as partition:offset (see `dlq list`)")
    partition, offset = parse_position(position)
    return _dlq_topic(context, topic), context, partition, offset


def _console() -> Console:
    """A console; output to a pipe or a file gets long lines rather than wrapped cells."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def _truncated(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else f"{line[: width - 1]}…"


@app.command("list")
def list_(
    context: ContextArg = None,
    reason: Annotated[
        str | None, typer.Option("--reason", "-r", help="Only dead letters with this reason.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Show at most this many.")
    ] = None,
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """List the dead letters, ordered by partition and offset."""
    setup_logging()
    dlq = _dlq_topic(context, topic)
    letters = read_dead_letters(kafka_settings(bootstrap), dlq, limit=limit, reason=reason)
    if not letters:
        typer.echo(f"no dead letters in {dlq}" + (f" with reason {reason}" if reason else ""))
        return
    table = Table("position", "failed at", "reason", "source", "error", title=dlq)
    for letter in letters:
        table.add_row(
            letter.position,
            _when(letter.failed_at),
            letter.reason,
            Text(letter.source or "-"),
            Text(_truncated(letter.error, ERROR_WIDTH)),
        )
    _console().print(table)


@app.command()
def show(
    context: ContextArg = None,
    position: Annotated[
        str | None, typer.Argument(metavar="PARTITION:OFFSET", help="As `dlq list` shows it.")
    ] = None,
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Show one dead letter: why it failed, every header, the key and the value's bytes."""
    setup_logging()
    dlq, _, partition, offset = _addressed(context, position, topic)
    letter = find_dead_letter(kafka_settings(bootstrap), dlq, partition, offset)
    for line in _describe(letter):
        typer.echo(line)


def _describe(letter: DeadLetter) -> list[str]:
    lines = [
        f"dead letter  {letter.topic} {letter.position}  (written {_when(letter.timestamp)})",
        f"reason       {letter.reason}",
        f"exception    {letter.exception or '-'}",
        f"source       {letter.source or '-'}",
        f"failed at    {_when(letter.failed_at)}",
        f"attempts     {'-' if letter.attempts is None else letter.attempts}",
        "error",
        *(f"  {line}" for line in (letter.error or "-").splitlines()),
        "headers",
    ]
    headers = [*letter.headers, *letter.dlq_headers]
    lines += [f"  {name} = {_printable(raw)}" for name, raw in headers] or ["  (none)"]
    lines.append(f"key          {_printable(letter.key)}")
    value = letter.value
    if value is None:
        lines.append("value        (null)")
        return lines
    schema_id = confluent_schema_id(value)
    wire = "" if schema_id is None else f", Confluent wire format, schema id {schema_id}"
    lines.append(f"value        {len(value)} bytes{wire}")
    lines += [f"  {line}" for line in _hex_dump(value)]
    return lines


def _printable(raw: bytes | None) -> str:
    """UTF-8 text as is (quoted if it has spaces), anything else as hex."""
    if raw is None:
        return "(null)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"0x{raw.hex()}"
    return text if text.isprintable() and " " not in text else repr(text)


def _hex_dump(data: bytes, width: int = 16) -> list[str]:
    return [f"{i:06x}  {data[i : i + width].hex(' ')}" for i in range(0, len(data), width)]


@app.command("replay")
def replay_(
    context: ContextArg = None,
    position: Annotated[
        str | None, typer.Argument(metavar="PARTITION:OFFSET", help="As `dlq list` shows it.")
    ] = None,
    value_file: Annotated[
        Path | None, typer.Option("--value-file", help="Replay this file's bytes as the value.")
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Replay this JSON document, encoded as --type, as the value."),
    ] = None,
    record_type: Annotated[
        str | None,
        typer.Option("--type", help="The command type of --json: its name or Avro full name."),
    ] = None,
    contexts: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            "-c",
            help="Where to find the context of --type, as module:attribute (or a module). "
            "Default: the contexts in the sub-packages of topologies/.",
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option("--registry", help="Schema registry URL (env STREAMFOLD_REGISTRY_URL)."),
    ] = None,
    username: Annotated[
        str | None,
        typer.Option("--username", help="Basic auth user (env STREAMFOLD_REGISTRY_USERNAME)."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", help="Basic auth password (env STREAMFOLD_REGISTRY_PASSWORD)."),
    ] = None,
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Send a dead letter back to its source topic: its own bytes, a file's, or --json's.

    It keeps its key and original headers and gains dlq.replayed_from.
    --json validates the document as the --type command and encodes it over the registry,
    registering its schema under {source topic}-{full name} if needed.
    """
    setup_logging()
    dlq, context_name, partition, offset = _addressed(context, position, topic)
    if value_file is not None and json_file is not None:
        raise ConfigurationError("give --value-file or --json, not both")
    if json_file is None and (record_type is not None or contexts):
        raise ConfigurationError("--type and --context go with --json")
    if json_file is not None and record_type is None:
        raise ConfigurationError("--json needs --type, the command type to encode it as")
    settings = kafka_settings(bootstrap)
    letter = find_dead_letter(settings, dlq, partition, offset)
    value: bytes | None = None
    if value_file is not None:
        value = _read_bytes(value_file)
    elif json_file is not None and record_type is not None:
        if letter.source_topic is None:
            raise ConfigurationError(
                f"dead letter {dlq} {letter.position} names no source topic to encode for"
            )
        found = _context(context_name, contexts)
        command = _command_type(found, record_type)
        message = _validated(command, json_file)
        expected = found.aggregate_for(command).topics.commands
        if letter.source_topic != expected:
            typer.secho(
                f"note: {command.__name__} commands belong on {expected}; "
                f"this dead letter came from {letter.source_topic}",
                fg=typer.colors.YELLOW,
                err=True,
            )
        client = registry_settings(registry, username, password).client_config()
        codec = AvroCodec(ConfluentSchemaRegistry.from_url(client.pop("url"), **client))
        value = codec.writer(letter.source_topic, command, found.namespace).encode(message)
    where = replay(settings, letter, value=value)
    typer.echo(
        f"replayed {dlq} {letter.position} to {where[0]} partition {where[1]} offset {where[2]}"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _context(name: str | None, specs: list[str] | None) -> BoundedContext:
    """The bounded context called ``name`` (the only one loaded, when no name is given)."""
    # Topology packages live in the project, not in site-packages: import them from here.
    sys.path.insert(0, str(Path.cwd()))
    loaded = load_contexts(specs) if specs else discover_contexts()
    if name is None:
        if len(loaded) != 1:
            names = ", ".join(c.name for c in loaded) or "none"
            raise ConfigurationError(
                f"name the bounded context of --type (found {names}): pass the context, "
                "not --topic, or a single --context"
            )
        return loaded[0]
    for context in loaded:
        if context.name == name:
            return context
    names = ", ".join(c.name for c in loaded) or "none"
    raise ConfigurationError(f"no bounded context {name!r} found (found {names}); use --context")


def _command_type(context: BoundedContext, name: str) -> type[Command]:
    for command in context.commands():
        if name in (command.__name__, context.full_name(command)):
            return command
    names = ", ".join(c.__name__ for c in context.commands())
    raise ConfigurationError(f"context {context.name} has no command {name!r}: it has {names}")


def _validated(command: type[Command], path: Path) -> Command:
    try:
        document = json.loads(_read_bytes(path))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path} is not JSON: {exc}") from exc
    try:
        return command.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{path} is not a valid {command.__name__}: {problems}") from exc


# --- event handlers: parked aggregates ---------------------------------------------------

HandlerOpt = Annotated[str, typer.Option("--handler", help="The event handler's name.")]
PrefixOpt = Annotated[
    str, typer.Option("--prefix", help="The deployment's topic prefix (worker topic_prefix).")
]


@app.command("parked")
def parked_(
    context: Annotated[str, typer.Argument(metavar="CONTEXT", help="Bounded context name.")],
    handler: HandlerOpt,
    prefix: PrefixOpt = "",
    bootstrap: BootstrapOpt = None,
) -> None:
    """List the aggregates an event handler holds parked, and the requests not yet handled.

    Their dead letters are on {context}.{handler}.dlq (`dlq list --topic` shows them)."""
    from streamfold.runtime.handler_worker import parked_aggregates  # noqa: PLC0415

    setup_logging()
    topics = handler_topics(context, handler, prefix)
    found = parked_aggregates(kafka_settings(bootstrap), topics.parked)
    if not found:
        typer.echo(f"no aggregate is parked by {context}.{handler}")
        return
    table = Table("events topic", "aggregate", "state", "pending", "error", title=topics.parked)
    for key, value in sorted(found.items()):
        asked = key.startswith(b"\x01")
        topic, _, aggregate = key.lstrip(b"\x01").partition(b"\x00")
        table.add_row(
            Text(topic.decode(errors="replace")),
            Text(aggregate.decode(errors="replace")),
            f"{value.get('state')} (asked)" if asked else str(value.get("state")),
            "" if asked else str(value.get("pending", "")),
            Text(_truncated(str(value.get("error", "")), ERROR_WIDTH)),
        )
    _console().print(table)


def _ask(
    context: str, handler: str, aggregate: str, prefix: str, bootstrap: str | None, action: str
) -> None:
    from streamfold.runtime.handler_worker import ask, parked_aggregates  # noqa: PLC0415

    setup_logging()
    settings = kafka_settings(bootstrap)
    topics = handler_topics(context, handler, prefix)
    keys = [
        key
        for key in parked_aggregates(settings, topics.parked)
        if not key.startswith(b"\x01") and key.partition(b"\x00")[2] == aggregate.encode()
    ]
    if not keys:
        raise ConfigurationError(f"{context}.{handler} holds no aggregate {aggregate!r} parked")
    for key in keys:
        ask(settings, topics.parked, key, action)
        typer.echo(f"asked {context}.{handler} to {action} {key.decode(errors='replace')!r}")


@app.command("retry")
def retry_(
    context: Annotated[str, typer.Argument(metavar="CONTEXT", help="Bounded context name.")],
    aggregate: Annotated[str, typer.Argument(metavar="AGGREGATE_ID", help="As `parked` shows.")],
    handler: HandlerOpt,
    prefix: PrefixOpt = "",
    bootstrap: BootstrapOpt = None,
) -> None:
    """Ask an event handler to handle a parked aggregate's events again, in order, and
    release it if they all succeed."""
    _ask(context, handler, aggregate, prefix, bootstrap, "retry")


@app.command("skip")
def skip_(
    context: Annotated[str, typer.Argument(metavar="CONTEXT", help="Bounded context name.")],
    aggregate: Annotated[str, typer.Argument(metavar="AGGREGATE_ID", help="As `parked` shows.")],
    handler: HandlerOpt,
    prefix: PrefixOpt = "",
    bootstrap: BootstrapOpt = None,
) -> None:
    """Ask an event handler to drop the event it failed on and handle the ones waiting
    behind it, in order."""
    _ask(context, handler, aggregate, prefix, bootstrap, "skip")
