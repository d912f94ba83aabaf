"""``streamfold registry``: serve the schema registry."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from streamfold.cli.edge import kafka_settings, setup_logging
from streamfold.errors import ConfigurationError

app = typer.Typer(help="The Confluent-compatible schema registry.", no_args_is_help=True)


@app.callback()
def registry() -> None:
    """Serve the schema registry (state in a Kafka topic)."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8081).")] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (env STREAMFOLD_KAFKA_*).")
    ] = None,
) -> None:
    """Answer the Confluent Schema Registry REST API until SIGTERM or Ctrl-C.

    Settings: env STREAMFOLD_REGISTRY_SERVER_* (host, port, topic, replication_factor,
    default_compatibility, basic_auth as user:password pairs, timeout_s); options win.
    """
    from streamfold.registry.server import (  # noqa: PLC0415 - keep CLI start-up light
        RegistryServerSettings,
        serve,
    )

    setup_logging()
    try:
        settings = RegistryServerSettings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid STREAMFOLD_REGISTRY_SERVER_* settings: {exc}") from exc
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    serve(settings.model_copy(update=overrides), kafka_settings(bootstrap))
