"""``streamfold deploy render``: Helm values for a topology, to review before ``helm install``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from streamfold.errors import ConfigurationError

app = typer.Typer(
    help="Deploy topologies to Kubernetes with helm/streamfold.", no_args_is_help=True
)


@app.callback()
def deploy() -> None:
    """Deploy topologies to Kubernetes with the Helm chart (helm/streamfold)."""


@app.command()
def render(
    topology: Annotated[
        str, typer.Argument(help="topology.yaml, its directory, or a name under topologies/")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            help="A worker group, name=aggregate[,saga:name,handler:name...]; repeat it to"
            " split the topology's aggregates, sagas and handlers over several StatefulSets"
            " (default: one group runs all)."
        ),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Pods per worker group (default: 3, at most the partitions).")
    ] = None,
    sink: Annotated[
        list[str] | None,
        typer.Option(
            help="A sink connector spec (sink.yaml, its directory or a context under"
            " connectors/); repeatable (default: connectors/<topology name> if it exists)."
        ),
    ] = None,
    no_sinks: Annotated[bool, typer.Option("--no-sinks", help="Deploy no sink.")] = False,
    no_gateway: Annotated[
        bool, typer.Option("--no-gateway", help="Deploy no command gateway.")
    ] = False,
    image: Annotated[
        str | None, typer.Option(help="The topology's image, [registry/]repository:tag.")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    registry: Annotated[
        str | None,
        typer.Option(help="An existing schema registry's URL (turns the chart's registry off)."),
    ] = None,
    clickhouse: Annotated[
        str | None, typer.Option(help="The sinks' ClickHouse server, http(s)://host:8123.")
    ] = None,
) -> None:
    """Write the chart's values for a topology: its worker groups, partitions, sinks and
    gateway (with the named queries of the first sink's connector directory).

    Then review them and run: helm install <release> helm/streamfold -f <values file>.
    """
    from streamfold.deploy.values import (  # noqa: PLC0415 - keep CLI start-up light
        chart_owned_settings,
        connector_directory,
        parse_group,
        read_queries,
        render_values,
        values_yaml,
    )
    from streamfold.runtime.topology import load_topology  # noqa: PLC0415
    from streamfold.sink.spec import load_connector  # noqa: PLC0415

    if no_sinks and sink:
        raise ConfigurationError("--sink and --no-sinks exclude each other")
    sys.path.insert(0, str(Path.cwd()))  # topology packages live in the project
    spec = load_topology(topology)
    context = spec.load_context()
    aggregates = [a.name for a in spec.select(context)]
    if sink:
        references = list(sink)
    elif not no_sinks and (Path("connectors") / spec.name / "sink.yaml").is_file():
        references = [spec.name]
    else:
        references = []
    sinks = [load_connector(reference) for reference in references]
    # The chart mounts the first sink's spec as the gateway's connector directory.
    queries = read_queries(connector_directory(references[0])) if references else {}
    values = render_values(
        spec,
        aggregates,
        sagas=[s.name for s in spec.select_sagas(context)],
        handlers=[h.name for h in spec.select_handlers(context)],
        groups=[parse_group(g) for g in group or []],
        sinks=sinks,
        replicas=replicas,
        image=image,
        bootstrap_servers=bootstrap,
        registry_url=registry,
        clickhouse_url=clickhouse,
        gateway=not no_gateway,
        queries=queries,
    )
    for name in chart_owned_settings(spec):
        typer.echo(f"note: worker.{name} of {spec.source} is set per pod by the chart", err=True)
    text = values_yaml(values, spec)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
