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
Every error body is an RFC 9457 problem (:mod:`streamfold.gateway.problems`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import AwareDatetime, BaseModel, ValidationError, create_model

from streamfold.contracts.results import TENANT_MISMATCH, Outcome
from streamfold.domain.aggregate import Aggregate, HandlerContractError
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command
from streamfold.gateway.auth import Authenticator, Caller
from streamfold.gateway.bus import CommandBus, Sent, Unavailable, Unencodable
from streamfold.gateway.metrics import GatewayMetrics
from streamfold.gateway.models import CommandStatus, FieldError, Problem, QueryResult, StageName
from streamfold.gateway.outcomes import Known, Stage
from streamfold.gateway.problems import PROBLEM_JSON, ProblemError, install_problem_handlers
from streamfold.gateway.reads import ClickHouseReader, QueryFailed, state_fields
from streamfold.gateway.settings import GatewaySettings
from streamfold.observability.logging import get_logger
from streamfold.observability.metrics import CONTENT_TYPE
from streamfold.observability.tracing import (
    new_traceparent,
    parent_context,
    traceparent_of,
    tracing_enabled,
)
from streamfold.sink.named_queries import NamedQuery
from streamfold.sink.queries import jsonable
from streamfold.sink.target import TargetUnavailableError

__all__ = ["build_app", "snake_case"]

log = get_logger(__name__)
tracer = trace.get_tracer("streamfold.gateway")

OnStage = Callable[[Known | None, Stage], Awaitable[None]]
_PROBLEM: dict[str, Any] = {"model": Problem}
#: Rejection codes that say "not yours", answered 403 rather than 409.
_FORBIDDEN_CODES = frozenset({TENANT_MISMATCH})


class _Json(JSONResponse):
    """JSON rendered by orjson (the standard encoder cost the gateway 5 % of its time)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def snake_case(name: str) -> str:
    """``RecordSale`` → ``record_sale``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def build_app(
    context: BoundedContext,
    aggregates: list[Aggregate[Any]],
    settings: GatewaySettings,
    bus: CommandBus,
    reader: ClickHouseReader | None,
    queries: list[NamedQuery],
    authenticator: Authenticator,
    metrics: GatewayMetrics,
) -> FastAPI:
    """The FastAPI application (module docstring); ``bus`` starts and stops with it."""

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
    metrics.open_waits.set_function(lambda: bus.book.open_waits)
    metrics.known.set_function(lambda: bus.book.known_count)

    app.state.authenticator = authenticator
    auth_responses: dict[int | str, dict[str, Any]] = (
        {401: _PROBLEM, 403: _PROBLEM} if authenticator.enabled else {}
    )

    for aggregate in aggregates:
        for command_type in aggregate.commands:
            _command_route(
                app,
                context,
                aggregate,
                command_type,
                settings,
                bus,
                auth_responses,
                authenticator,
                metrics,
            )
        if reader is not None:
            _state_route(app, context, aggregate, reader, auth_responses, authenticator)
    _command_lookup(app, settings, bus, auth_responses, metrics)
    if reader is not None:
        for query in queries:
            _query_route(app, context, query, reader, auth_responses, authenticator)
    _plumbing(app, bus, metrics)
    _problems_in_openapi(app)
    return app


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


async def current_caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    """The verified caller of a request (a dependency of every route that needs one).

    ``async``: FastAPI runs a plain function dependency on its thread pool, a hop per
    request that cost the gateway a fifth of its throughput."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.caller(authorization, x_api_key)


def _timeout_s(settings: GatewaySettings, wait_timeout_ms: int | None) -> float:
    wanted = settings.default_wait_ms if wait_timeout_ms is None else wait_timeout_ms
    return min(wanted, settings.max_wait_ms) / 1000


def _command_route(
    app: FastAPI,
    context: BoundedContext,
    aggregate: Aggregate[Any],
    command_type: type[Command],
    settings: GatewaySettings,
    bus: CommandBus,
    auth_responses: dict[int | str, dict[str, Any]],
    authenticator: Authenticator,
    metrics: GatewayMetrics,
) -> None:
    path = f"/{context.name}/{aggregate.name}/{snake_case(command_type.__name__)}"

    async def endpoint(
        request: Request,
        command: Command,
        who: Caller,
        wait_stage: StageName,
        wait_timeout_ms: int | None,
        command_uuid: uuid.UUID | None,
        request_id: str | None,
        expected_version: int | None,
        tenant: str | None,
        traceparent: str | None,
        accept: str | None,
    ) -> Response:
        Authenticator.check_tenant(who, tenant)
        try:
            aggregate.aggregate_id(command)
        except HandlerContractError as exc:
            field = aggregate.id_field
            raise _invalid_body(str(exc), "aggregate_id", field) from exc
        stage = Stage.parse(wait_stage)
        timeout_s = _timeout_s(settings, wait_timeout_ms)
        command_id = str(command_uuid or uuid.uuid4())
        with _send_span(context.name, command_type.__name__, command_id, traceparent) as sent_as:
            headers: dict[str, str | None] = {
                "request_id": request_id,
                # With auth off a Tenant header is taken as it is (development only).
                "tenant": who.tenant if authenticator.enabled else tenant,
                "principal": who.principal,
                "traceparent": sent_as,
            }

            def send(on_stage: OnStage | None = None) -> Awaitable[Sent]:
                return bus.send(
                    command,
                    command_id=command_id,
                    stage=stage,
                    timeout_s=timeout_s,
                    headers=headers,
                    expected_version=expected_version,
                    on_stage=on_stage,
                )

            if accept is not None and "text/event-stream" in accept:
                return _stream(command_id, stage, send)
            try:
                sent = await _unless_gone(request, send())
            except Unavailable as exc:
                metrics.unavailable.inc()
                raise _unavailable(exc, command_id) from exc
            except Unencodable as exc:
                raise _invalid_body(str(exc), "unencodable") from exc
            if sent is None:  # the client went away; its wait is released
                metrics.abandoned.inc()
                return Response(status_code=499)
            metrics.answered(stage.label, sent)
            return _answer(sent.command_id, sent.known, stage, sent.replay)

    _with_signature(
        endpoint,
        command=(command_type, Body()),
        who=(Caller, Depends(current_caller)),
        wait_stage=(StageName, Header(alias="Wait-Stage", description="The stage to wait for.")),
        wait_timeout_ms=(
            int | None,
            Header(alias="Wait-Timeout-Ms", ge=0, description="How long to wait, at most."),
        ),
        command_uuid=(
            uuid.UUID | None,
            Header(alias="Command-Id", description="Idempotency key: a UUID."),
        ),
        request_id=(str | None, Header(alias="Request-Id", max_length=200)),
        expected_version=(
            int | None,
            Header(alias="Expected-Version", ge=0, description="Optimistic concurrency."),
        ),
        tenant=(str | None, Header(alias="Tenant", max_length=200)),
        traceparent=(str | None, Header(alias="traceparent", max_length=200)),
        accept=(str | None, Header(alias="Accept", include_in_schema=False)),
        defaults={"wait_stage": "processed"},
    )
    doc = inspect.getdoc(command_type) or f"Send {command_type.__name__}."
    app.post(
        path,
        name=f"{aggregate.name}.{snake_case(command_type.__name__)}",
        summary=f"{command_type.__name__}",
        description=doc,
        tags=[aggregate.name],
        response_model=CommandStatus,
        responses={
            202: {"model": CommandStatus, "description": "Sent; the stage was not reached yet"},
            409: _PROBLEM,
            422: _PROBLEM,
            503: _PROBLEM,
            **auth_responses,
        },
    )(endpoint)


@contextmanager
def _send_span(
    context: str, command: str, command_id: str, traceparent: str | None
) -> Iterator[str | None]:
    """The ``traceparent`` a command goes out with.

    With a tracer provider (``STREAMFOLD_TRACING_OTLP_ENDPOINT``), a producer span under
    FastAPI's server span (which continues the caller's trace); without one, no span is
    made: the caller's ``traceparent`` goes on as it came, or a new trace starts here.
    """
    if not tracing_enabled():
        yield traceparent if parent_context(traceparent) is not None else new_traceparent()
        return
    with tracer.start_as_current_span(
        f"send {context}.{command}",
        kind=SpanKind.PRODUCER,
        attributes={"streamfold.command_id": command_id},
    ) as span:
        yield traceparent_of(span)


def _answer(command_id: str, known: Known | None, stage: Stage, replay: bool) -> Response:
    status = _status(command_id, known, replay=replay)
    result = known.result if known is not None else None
    location = {"Location": f"/commands/{command_id}"}
    if result is not None and result.outcome is Outcome.REJECTED:
        forbidden = result.code in _FORBIDDEN_CODES
        raise ProblemError(
            403 if forbidden else 409,
            "forbidden-tenant" if forbidden else "rejected",
            "The aggregate refused the command",
            result.message,
            code=result.code,
            command_id=command_id,
            current_version=result.version,
        )
    if result is not None and result.outcome is Outcome.INVALID:
        raise ProblemError(
            422,
            "unprocessable-command",
            "The command could not be processed",
            result.message,
            code=result.code,
            command_id=command_id,
        )
    reached = known.stage if known is not None else Stage.SENT
    if reached < stage:
        return _Json(status.model_dump(), status_code=202, headers=location)
    return _Json(status.model_dump(), status_code=200, headers=location)


def _status(command_id: str, known: Known | None, *, replay: bool = False) -> CommandStatus:
    """What is known of a command, as the API says it."""
    stage = known.stage if known is not None else Stage.SENT
    result = known.result if known is not None else None
    if result is None:
        return CommandStatus(command_id=command_id, stage=stage.label, replay=replay)
    return CommandStatus(
        command_id=command_id,
        stage=stage.label,
        outcome=result.outcome.value,
        aggregate_type=result.aggregate_type,
        aggregate_id=result.aggregate_id,
        command_type=result.command_type,
        version=result.version,
        event_types=list(result.event_types),
        code=result.code,
        message=result.message,
        replay=replay or result.duplicate,
    )


def _invalid_body(detail: str, kind: str, field: str | None = None) -> ProblemError:
    """A 422 for a body that passed its model but cannot be sent as it is."""
    return ProblemError(
        422,
        "invalid-request",
        "The request is not valid",
        detail,
        errors=[FieldError(loc=["body", field] if field else ["body"], message=detail, type=kind)],
    )


def _unavailable(exc: Unavailable, command_id: str) -> ProblemError:
    return ProblemError(
        503,
        "unavailable",
        "The command was not sent",
        str(exc),
        headers={"Retry-After": str(exc.retry_after_s)},
        command_id=command_id,
    )


async def _unless_gone(request: Request, work: Awaitable[Sent]) -> Sent | None:
    """Run ``work`` unless the client disconnects first (then cancel it: None)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        abandoned = not task.done()
        if abandoned:  # the client left, or this request was cancelled: release the wait
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if abandoned else task.result()


async def _disconnect(request: Request) -> None:
    """Return when the client goes away (the body was read: ``receive`` waits for that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _stream(
    command_id: str, stage: Stage, send: Callable[..., Awaitable[Sent]]
) -> StreamingResponse:
    """``text/event-stream``: an event per stage reached, then ``done`` or ``timeout``."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def on_stage(known: Known | None, stage: Stage) -> None:
        status = _status(command_id, known)
        await queue.put(_event(stage.label, status.model_dump()))

    async def run() -> None:
        try:
            sent = await send(on_stage)
            status = _status(command_id, sent.known, replay=sent.replay)
            reached = sent.known.stage if sent.known is not None else Stage.SENT
            kind = "done" if sent.acknowledged and reached >= stage else "timeout"
            body = {**status.model_dump(), "location": f"/commands/{command_id}"}
            await queue.put(_event(kind, body))
        except Unavailable as exc:
            problem = _unavailable(exc, command_id).problem
            await queue.put(_event("error", problem.model_dump(exclude_none=True)))
        except Unencodable as exc:
            problem = _invalid_body(str(exc), "unencodable").problem
            await queue.put(_event("error", problem.model_dump(exclude_none=True)))
        except Exception:
            log.exception("a streamed command failed", command_id=command_id)
            raise
        finally:
            await queue.put(None)

    async def events() -> AsyncIterator[str]:
        task = asyncio.ensure_future(run())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "Location": f"/commands/{command_id}"},
    )


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


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
        known = bus.book.known(command_id)
        if wait_stage is not None:
            stage = Stage.parse(wait_stage)
            timeout_s = _timeout_s(settings, wait_timeout_ms)

            async def follow() -> Sent:
                found = await bus.follow(command_id, stage, timeout_s)
                return Sent(command_id, found, False, True)

            sent = await _unless_gone(request, follow())
            if sent is None:
                metrics.abandoned.inc()
                return Response(status_code=499)
            known = sent.known
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
        status = _status(command_id, known)
        code = 202 if wait_stage is not None and known.stage < Stage.parse(wait_stage) else 200
        return _Json(status.model_dump(), status_code=code)


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
            raise ProblemError(
                409,
                "projection-behind",
                "The projection is older than the version asked for",
                f"ClickHouse holds version {projected}; retry, or send with Wait-Stage: projected",
                code="projection_behind",
                current_version=projected,
            )
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
        return _Json(body.model_dump())

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
        return _Json({"status": "alive" if ok else "not alive"}, 200 if ok else 503)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok = bus.ready
        return _Json({"status": "ready" if ok else "not ready"}, 200 if ok else 503)

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
