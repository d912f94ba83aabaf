"""The gateway's HTTP API, generated from a topology's bounded context.

Routes (``{ctx}`` the context, ``{agg}`` an aggregate, ``{command}`` a command type in
snake_case):

- ``POST /{ctx}/{agg}/{command}``: the body is the command model; the aggregate id comes
  from it. Headers: ``Wait-Stage`` (``sent | processed | projected``, default processed),
  ``Wait-Timeout-Ms`` (default and cap from the settings), ``Command-Id`` (an idempotency
  key), ``Request-Id``, ``Expected-Version``, ``Tenant``, ``traceparent``;
  ``Accept: text/event-stream`` streams one event per stage reached.
- ``GET /{ctx}/{agg}/{id}/state`` (``?version=N``, ``?min_version=N``), ``ETag`` the version.
- ``GET /commands/{command_id}``: what is known of a command; with ``Wait-Stage`` it waits
  (``Wait-Timeout-Ms``) like a send does, on a command any replica sent.
- ``GET /{ctx}/queries/{name}``: a named query of ``connectors/<ctx>/queries``.
- ``GET /openapi.json``, ``GET /docs`` (Swagger UI, its assets served from here),
  ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

Answers: 200 (the outcome), 202 with ``Location: /commands/{id}`` (sent, not yet at the
stage when the wait ended), 409 (a rejection or version conflict: the domain's code, its
message, the current version), 422 (an invalid field, an unknown route parameter, or a
command the worker could not process), 503 (not sent: Kafka unreachable), 401/403 (auth).
Every error body is an RFC 9457 problem (:mod:`streamfold.gateway.problems`). The command
routes are answered by :mod:`streamfold.gateway.commands` (its lane, ahead of FastAPI); this
module builds the rest and the OpenAPI of all.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BaseModel, ValidationError, create_model

from streamfold.domain.aggregate import Aggregate
from streamfold.domain.context import BoundedContext
from streamfold.domain.naming import command_path
from streamfold.gateway.auth import Authenticator, Caller
from streamfold.gateway.bus import CommandBus
from streamfold.gateway.commands import (
    ClientGone,
    CommandHeaders,
    CommandLane,
    CommandRoute,
    Json,
    fastapi_endpoint,
    scope_caller,
    status_of,
    timeout_of,
    unless_gone,
)
from streamfold.gateway.metrics import GatewayMetrics
from streamfold.gateway.models import CommandStatus, Problem, QueryResult, StageName
from streamfold.gateway.outcomes import Stage
from streamfold.gateway.problems import PROBLEM_JSON, ProblemError, install_problem_handlers
from streamfold.gateway.reads import ClickHouseReader, QueryFailed, state_fields
from streamfold.gateway.settings import GatewaySettings
from streamfold.observability.logging import get_logger
from streamfold.observability.metrics import CONTENT_TYPE
from streamfold.sink.named_queries import NamedQuery
from streamfold.sink.queries import jsonable
from streamfold.sink.target import TargetUnavailableError

__all__ = ["build_app"]

log = get_logger(__name__)

_PROBLEM: dict[str, Any] = {"model": Problem}


def build_app(
    context: BoundedContext,
    aggregates: list[Aggregate[Any]],
    settings: GatewaySettings,
    bus: CommandBus,
    reader: ClickHouseReader | None,
    queries: list[NamedQuery],
    authenticator: Authenticator,
    metrics: GatewayMetrics,
) -> CommandLane:
    """The application (module docstring): FastAPI behind the command lane; ``bus`` starts
    and stops with it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await bus.start()
        try:
            yield
        finally:
            await bus.stop()
            if reader is not None:
                await asyncio.to_thread(reader.close)

    app = FastAPI(
        title=f"{context.name} — streamfold command gateway",
        version="1",
        description=(
            f"Commands, state and queries of the `{context.name}` bounded context. "
            "Send a command and choose how long to wait with `Wait-Stage` "
            "(sent, processed, projected) and `Wait-Timeout-Ms`."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.state.bus = bus
    app.state.authenticator = authenticator
    metrics.open_waits.set_function(lambda: bus.book.open_waits)
    metrics.known.set_function(lambda: bus.book.known_count)
    auth_responses: dict[int | str, dict[str, Any]] = (
        {401: _PROBLEM, 403: _PROBLEM} if authenticator.enabled else {}
    )

    routes: dict[str, CommandRoute] = {}
    for aggregate in aggregates:
        for command_type in aggregate.commands:
            path = command_path(context.name, aggregate.name, command_type.__name__)
            route = CommandRoute(
                path, aggregate, command_type, context.name, settings, bus, authenticator, metrics
            )
            routes[path] = route
            _command_route(app, route, auth_responses)
        if reader is not None:
            _state_route(app, context, aggregate, reader, auth_responses, authenticator)
    _command_lookup(app, settings, bus, auth_responses, metrics)
    if reader is not None:
        for query in queries:
            _query_route(app, context, query, reader, auth_responses, authenticator)
    _plumbing(app, bus, metrics)
    _problems_in_openapi(app)
    return CommandLane(app, routes, authenticator)


def _problems_in_openapi(app: FastAPI) -> None:
    """Declare every error answer's body as ``application/problem+json`` (what is sent):
    FastAPI puts a response model under ``application/json``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status.isdigit() and int(status) >= 400 and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# ---------------------------------------------------------------------- commands


async def current_caller(request: Request) -> Caller:
    """The caller of a request (a dependency of every route that needs one): the one
    :class:`~streamfold.gateway.commands.CommandLane` verified before routing. Served
    without the lane, the app verifies the credential here (it never falls open)."""
    verified = scope_caller(request.scope)
    if verified is not None:
        return verified
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.caller(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


def _command_route(app: FastAPI, route: CommandRoute, auth_responses: dict[int | str, Any]) -> None:
    """The FastAPI side of a command route (see :mod:`streamfold.gateway.commands`)."""
    endpoint = fastapi_endpoint(route)
    _with_signature(
        endpoint,
        command=(route.command_type, Body()),
        who=(Caller, Depends(current_caller)),
        headers=(CommandHeaders, Header()),
    )
    app.post(
        route.path,
        name=f"{route.aggregate.name}.{route.path.rsplit('/', 1)[-1]}",
        summary=route.command_type.__name__,
        description=route.description,
        tags=[route.aggregate.name],
        response_model=CommandStatus,
        responses={
            202: {"model": CommandStatus, "description": "Sent; the stage was not reached yet"},
            **auth_responses,
            # 403 with auth off too: the worker refuses another tenant's aggregate.
            403: _PROBLEM,
            409: _PROBLEM,
            413: _PROBLEM,
            422: _PROBLEM,
            503: _PROBLEM,
        },
    )(endpoint)


def _command_lookup(
    app: FastAPI,
    settings: GatewaySettings,
    bus: CommandBus,
    auth_responses: dict[int | str, dict[str, Any]],
    metrics: GatewayMetrics,
) -> None:
    @app.get(
        "/commands/{command_id}",
        response_model=CommandStatus,
        tags=["commands"],
        summary="A command's outcome",
        description=(
            "What any gateway replica has read of the command: its stage and outcome. "
            "With `Wait-Stage` it waits for that stage (`Wait-Timeout-Ms`): 202 if the "
            "stage was not reached. Outcomes are kept for the last `recent_outcomes` "
            "commands and `lookback_s` seconds before the replica started: older ones "
            "are in ClickHouse's `<ctx>_commands` view."
        ),
        responses={202: {"model": CommandStatus}, 404: _PROBLEM, 422: _PROBLEM, **auth_responses},
    )
    async def command_status(
        request: Request,
        command_uuid: Annotated[uuid.UUID, Path(alias="command_id")],
        who: Annotated[Caller, Depends(current_caller)],
        wait_stage: Annotated[StageName | None, Header(alias="Wait-Stage")] = None,
        wait_timeout_ms: Annotated[int | None, Header(alias="Wait-Timeout-Ms", ge=0)] = None,
    ) -> Response:
        command_id = str(command_uuid)
        stage = Stage.parse(wait_stage) if wait_stage is not None else None
        known = bus.book.known(command_id)
        if stage is not None:
            timeout_s = timeout_of(settings, wait_timeout_ms)
            try:
                known = await unless_gone(request.receive, bus.follow(command_id, stage, timeout_s))
            except ClientGone:
                metrics.abandoned.inc()
                return Response(status_code=499)
        if known is None:
            raise ProblemError(
                404,
                "unknown-command",
                "No outcome known for this command",
                "not sent, not processed yet, or older than this replica's memory",
                command_id=command_id,
            )
        if who.tenant is not None and known.tenant != who.tenant:
            # Another tenant's command is not to be told apart from an unknown one.
            raise ProblemError(404, "unknown-command", "No outcome known for this command")
        status = status_of(command_id, known)
        code = 202 if stage is not None and known.stage < stage else 200
        return Json(status.model_dump(), status_code=code)


# ---------------------------------------------------------------------- state and queries


def _state_route(
    app: FastAPI,
    context: BoundedContext,
    aggregate: Aggregate[Any],
    reader: ClickHouseReader,
    auth_responses: dict[int | str, dict[str, Any]],
    authenticator: Authenticator,
) -> None:
    state_type = aggregate.state_type
    view: type[BaseModel] = create_model(
        f"{state_type.__name__}View",
        aggregate_type=(str, ...),
        aggregate_id=(str, ...),
        version=(int, ...),
        updated_at=(AwareDatetime, ...),
        tenant=(str, ""),
        state=(state_type, ...),
    )
    table = f"{context.name}_{aggregate.name}"

    async def endpoint(
        aggregate_id: Annotated[str, Path(alias="id", min_length=1, max_length=512)],
        who: Annotated[Caller, Depends(current_caller)],
        version: Annotated[
            int | None, Query(ge=1, description="This version, from the history.")
        ] = None,
        min_version: Annotated[
            int | None, Query(ge=0, description="At least this version, else 409.")
        ] = None,
    ) -> Response:
        tenant = who.tenant if authenticator.enabled else None
        try:
            row = await reader.state(table, aggregate_id, tenant, version)
        except TargetUnavailableError as exc:
            raise ProblemError(503, "unavailable", "ClickHouse is unreachable", str(exc)) from exc
        if row is None and min_version and version is None:
            raise _behind(0)  # nothing projected yet: behind any version asked for
        if row is None:
            raise ProblemError(
                404,
                "unknown-aggregate",
                f"No {aggregate.name} {aggregate_id!r}"
                + (f" at version {version}" if version else ""),
                "not created, deleted, or not projected yet",
            )
        projected = int(row["version"])
        if min_version is not None and projected < min_version:
            raise _behind(projected)
        try:
            state = state_type.model_validate(state_fields(row, state_type))
        except ValidationError as exc:
            raise ProblemError(
                503, "unreadable-state", "The projected state does not match the model", str(exc)
            ) from exc
        updated_at = row["updated_at"]
        if isinstance(updated_at, str):
            updated_at = datetime.fromisoformat(updated_at)
        if updated_at.tzinfo is None:  # the sink writes UTC; chDB gives it back naive
            updated_at = updated_at.replace(tzinfo=UTC)
        body = view(
            aggregate_type=aggregate.name,
            aggregate_id=aggregate_id,
            version=projected,
            updated_at=updated_at,
            tenant=row.get("tenant") or "",
            state=state,
        )
        return Response(
            body.model_dump_json(),
            media_type="application/json",
            headers={"ETag": f'"{projected}"'},
        )

    app.get(
        # ``path``: an id may hold a ``/`` (store_stock's ``store-1/item-01``).
        f"/{context.name}/{aggregate.name}/{{id:path}}/state",
        name=f"{aggregate.name}.state",
        summary=f"The state of one {aggregate.name}",
        description=(
            f"From ClickHouse (`{table}_state_last`; `?version=N` reads `{table}_state`), "
            "which trails the write side by the sink's batch interval: pass `min_version` "
            "to refuse an older state (409 with the projected version)."
        ),
        tags=[aggregate.name],
        response_model=view,
        responses={404: _PROBLEM, 409: _PROBLEM, 422: _PROBLEM, 503: _PROBLEM, **auth_responses},
    )(endpoint)


def _behind(projected: int) -> ProblemError:
    """The 409 of a state older than the ``min_version`` asked for."""
    return ProblemError(
        409,
        "projection-behind",
        "The projection is older than the version asked for",
        f"ClickHouse holds version {projected}; retry, or send with Wait-Stage: projected",
        code="projection_behind",
        current_version=projected,
    )


def _query_route(
    app: FastAPI,
    context: BoundedContext,
    query: NamedQuery,
    reader: ClickHouseReader,
    auth_responses: dict[int | str, dict[str, Any]],
    authenticator: Authenticator,
) -> None:
    async def endpoint(who: Caller, **values: Any) -> Response:
        tenant = who.tenant if authenticator.enabled else None
        try:
            columns, rows, truncated = await reader.run(query, values, tenant)
        except TargetUnavailableError as exc:
            raise ProblemError(503, "unavailable", "ClickHouse is unreachable", str(exc)) from exc
        except QueryFailed as exc:
            raise ProblemError(
                422, "query-failed", f"The query {query.name} failed", str(exc)[:1000]
            ) from exc
        body = QueryResult(
            query=query.name,
            columns=columns,
            rows=jsonable([list(r) for r in rows]),
            truncated=truncated,
        )
        return Json(body.model_dump())

    parameters: dict[str, Any] = {"who": (Caller, Depends(current_caller))}
    defaults: dict[str, Any] = {}
    for param in query.request_parameters:
        kind = param.python_type
        annotation = kind | None if param.nullable else kind
        parameters[param.name] = (
            annotation,
            Query(description=f"ClickHouse {param.clickhouse_type}"),
        )
        if not param.required:
            defaults[param.name] = param.default
    _with_signature(endpoint, **parameters, defaults=defaults)
    app.get(
        f"/{context.name}/queries/{query.name}",
        name=f"queries.{query.name}",
        summary=query.title,
        tags=["queries"],
        response_model=QueryResult,
        responses={422: _PROBLEM, 503: _PROBLEM, **auth_responses},
    )(endpoint)


# ---------------------------------------------------------------------- docs, probes


def _plumbing(app: FastAPI, bus: CommandBus, metrics: GatewayMetrics) -> None:
    from importlib.resources import files  # noqa: PLC0415

    static = files("fastapi_offline") / "static"
    app.mount("/docs/static", StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=app.title,
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        ok = bus.alive
        return Json({"status": "alive" if ok else "not alive"}, 200 if ok else 503)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok = bus.ready
        return Json({"status": "ready" if ok else "not ready"}, 200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _with_signature(
    endpoint: Callable[..., Any], *, defaults: dict[str, Any] | None = None, **parameters: Any
) -> None:
    """Give ``endpoint`` the typed signature FastAPI reads (its annotations are strings)."""
    defaults = defaults or {}
    params = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    ]
    params = params if "request" in inspect.signature(endpoint).parameters else []
    required: list[inspect.Parameter] = []
    optional: list[inspect.Parameter] = []
    for name, (annotation, marker) in parameters.items():
        has_default = name in defaults or _optional(annotation)
        default = defaults.get(name)
        param = inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[annotation, marker],
            **({"default": default} if has_default else {}),
        )
        (optional if has_default else required).append(param)
    endpoint.__signature__ = inspect.Signature([*params, *required, *optional])  # type: ignore[attr-defined]


def _optional(annotation: Any) -> bool:
    return type(None) in getattr(annotation, "__args__", ())
