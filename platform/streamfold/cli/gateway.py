"""``streamfold gateway <topology>`` and ``streamfold send``: the HTTP command gateway."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from streamfold.cli.edge import kafka_settings, registry_settings, setup_logging
from streamfold.errors import ConfigurationError


def gateway(
    topology: Annotated[
        str, typer.Argument(help="topology.yaml, its directory, or a name under topologies/")
    ],
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (env STREAMFOLD_KAFKA_*).")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Schema registry URL (env STREAMFOLD_REGISTRY_URL).")
    ] = None,
) -> None:
    """Serve the topology's commands, state and queries over HTTP until SIGTERM or Ctrl-C.

    Settings: env STREAMFOLD_GATEWAY_* (host, port, auth, waits, ClickHouse target, ...),
    tracing STREAMFOLD_TRACING_*. The docs are at /docs, the OpenAPI at /openapi.json.
    """
    setup_logging()
    # First: refused credentials or certificates stop the gateway before its heavy imports.
    kafka = kafka_settings(bootstrap)
    from streamfold.gateway.server import assemble  # noqa: PLC0415
    from streamfold.gateway.settings import GatewaySettings  # noqa: PLC0415
    from streamfold.http.server import HttpServer, ServerTls  # noqa: PLC0415
    from streamfold.observability.tracing import TracingSettings  # noqa: PLC0415
    from streamfold.runtime.topology import load_topology  # noqa: PLC0415

    sys.path.insert(0, str(Path.cwd()))  # topology packages live in the project
    try:
        settings = GatewaySettings()
        tracing = TracingSettings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid gateway settings: {exc}") from exc
    tls = ServerTls.of(settings.tls_certificate, settings.tls_key, "the gateway")
    spec = load_topology(topology)
    app = assemble(spec, settings, kafka, registry_settings(registry), tracing)
    # A stop answers every open wait (202, the command's Location) before the grace period.
    release = app.state.bus.book.release
    server = HttpServer(
        app, settings.host, settings.port, name="gateway", on_shutdown=release, tls=tls
    )
    server.run()


def send(
    command: Annotated[str, typer.Argument(help="<context>.<Command>, e.g. retail.RecordSale")],
    body: Annotated[str, typer.Argument(help="The command as JSON ('-' reads stdin).")],
    wait: Annotated[str, typer.Option(help="sent, processed or projected.")] = "processed",
    timeout_ms: Annotated[int, typer.Option(help="How long to wait, at most.")] = 10_000,
    url: Annotated[
        str, typer.Option(envvar="STREAMFOLD_GATEWAY_URL", help="The gateway's URL.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option(envvar="STREAMFOLD_API_KEY", help="Credential (key or JWT).")
    ] = None,
    command_id: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    ca_location: Annotated[
        Path | None,
        typer.Option(
            envvar="STREAMFOLD_GATEWAY_SSL_CA_LOCATION", help="CA (PEM) of an HTTPS gateway."
        ),
    ] = None,
) -> None:
    """Send one command through a gateway and print its outcome as JSON.

    Exit codes: 0 accepted (or the stage reached), 2 rejected, 3 invalid, 4 not at the
    stage in time (pending), 5 unavailable.
    """
    from streamfold.client import (  # noqa: PLC0415
        Client,
        CommandInvalid,
        CommandPending,
        CommandRejected,
        GatewayUnavailable,
    )

    context, _, name = command.partition(".")
    if not context or not name:
        raise ConfigurationError(f"the command must be <context>.<Command>, not {command!r}")
    text = sys.stdin.read() if body == "-" else body
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"the command is not JSON: {exc}") from exc
    with Client(url, api_key=api_key, ca_location=ca_location) as client:
        try:
            result = client.send_json(
                context, name, payload, wait=wait, timeout_ms=timeout_ms, command_id=command_id
            )
        except CommandRejected as exc:
            _print(exc.problem.model_dump(exclude_none=True))
            raise typer.Exit(2) from exc
        except CommandInvalid as exc:
            _print(exc.problem.model_dump(exclude_none=True))
            raise typer.Exit(3) from exc
        except CommandPending as exc:
            _print(exc.status.model_dump())
            raise typer.Exit(4) from exc
        except GatewayUnavailable as exc:
            problem = exc.problem.model_dump(exclude_none=True) if exc.problem else None
            _print(problem or {"status": 503, "detail": str(exc)})
            raise typer.Exit(5) from exc
    _print(result.model_dump())


def _print(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))
