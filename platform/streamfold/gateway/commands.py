"""The command routes: ``POST /{ctx}/{aggregate}/{command}``, and the lane that serves them.

:class:`CommandRoute` answers one command route: check the tenant and the aggregate id, send
through the :class:`~streamfold.gateway.bus.CommandBus`, wait for the stage, answer (the
status table of :mod:`streamfold.gateway.app`). Two front doors reach it:

- :class:`CommandLane`, an ASGI layer in front of FastAPI, takes every ``POST`` to a command
  path: it reads the headers and the body itself (the same :class:`CommandHeaders` model and
  the command's pydantic model, ``model_validate_json``) and answers with the route. This is
  the hot path: through FastAPI's routing, dependency solving and per-parameter validation
  the gateway took 531 commands/s at SENT with 64 clients, through the lane 1,969 (one
  probe on two cores shared with the broker and the worker);
- the FastAPI route of the same path carries the OpenAPI description (request model,
  headers, every answer) and serves ``Accept: text/event-stream``, which the lane hands on.

Both validate with the same models and answer through the same route, so an answer does not
depend on the door; the command tests and schemathesis run against the lane.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from streamfold.contracts.results import TENANT_MISMATCH, Outcome
from streamfold.domain.aggregate import Aggregate, HandlerContractError
from streamfold.domain.messages import Command
from streamfold.gateway.auth import Authenticator, Caller
from streamfold.gateway.bus import CommandBus, Sent, Unavailable, Unencodable
from streamfold.gateway.metrics import GatewayMetrics
from streamfold.gateway.models import CommandStatus, FieldError, StageName
from streamfold.gateway.outcomes import Known, Stage
from streamfold.gateway.problems import ProblemError, problem_response, validation_problem
from streamfold.gateway.settings import GatewaySettings
from streamfold.observability.logging import get_logger
from streamfold.observability.tracing import (
    new_traceparent,
    parent_context,
    traceparent_of,
    tracing_enabled,
)

__all__ = [
    "ClientGone",
    "CommandHeaders",
    "CommandLane",
    "CommandRoute",
    "Json",
    "scope_caller",
    "status_of",
]

log = get_logger(__name__)
tracer = trace.get_tracer("streamfold.gateway")

T = TypeVar("T")
OnStage = Callable[[Known | None, Stage], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
#: Rejection codes that say "not yours", answered 403 rather than 409.
_FORBIDDEN_CODES = frozenset({TENANT_MISMATCH})
#: The largest command body read (a command is a few hundred bytes; Kafka's limit is 1 MB).
MAX_BODY = 1_000_000


class Json(JSONResponse):
    """JSON rendered by orjson (the standard encoder cost the gateway 5 % of its time)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class CommandHeaders(BaseModel):
    """The headers a command request may carry (the lane's and FastAPI's one model)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    wait_stage: StageName = Field(
        default="processed", alias="Wait-Stage", description="The stage to wait for."
    )
    wait_timeout_ms: int | None = Field(
        default=None, alias="Wait-Timeout-Ms", ge=0, description="How long to wait, at most."
    )
    command_id: uuid.UUID | None = Field(
        default=None, alias="Command-Id", description="Idempotency key: a UUID."
    )
    request_id: str | None = Field(default=None, alias="Request-Id", max_length=200)
    expected_version: int | None = Field(
        default=None, alias="Expected-Version", ge=0, description="Optimistic concurrency."
    )
    tenant: str | None = Field(default=None, alias="Tenant", max_length=200)
    #: Who sent it; with auth on, the credential's principal only.
    principal: str | None = Field(default=None, alias="Principal", max_length=200)
    #: When it happened at its source (a POS's sale time), else when Kafka took it.
    issued_at: AwareDatetime | None = Field(default=None, alias="Issued-At")
    traceparent: str | None = Field(default=None, alias="traceparent", max_length=200)

    @field_validator("request_id", "tenant", "principal", "traceparent", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: object) -> object:
        """An empty header says nothing (``Tenant;`` is no tenant, not the tenant "")."""
        return None if value == "" else value


#: Header names as they arrive (lower case) → the model's aliases.
_ALIASES = {
    (info.alias or name).lower(): info.alias or name
    for name, info in CommandHeaders.model_fields.items()
}


def parse_headers(raw: dict[str, str]) -> CommandHeaders:
    """The command headers of a request (lower-case names); 422 naming a bad one."""
    given = {_ALIASES[name]: value for name, value in raw.items() if name in _ALIASES}
    try:
        return CommandHeaders.model_validate(given)
    except ValidationError as exc:
        raise validation_problem(exc, "header") from exc


@dataclass(frozen=True, slots=True)
class CommandRoute:
    """One command's route, and how a request to it is answered."""

    path: str
    aggregate: Aggregate[Any]
    command_type: type[Command]
    context: str
    settings: GatewaySettings
    bus: CommandBus
    authenticator: Authenticator
    metrics: GatewayMetrics

    def parse(self, body: bytes) -> Command:
        """The command of a request body; 422 naming the invalid field."""
        try:
            return self.command_type.model_validate_json(body)
        except ValidationError as exc:
            raise validation_problem(exc, "body") from exc

    async def answer(
        self,
        command: Command,
        who: Caller,
        headers: CommandHeaders,
        receive: Receive,
        *,
        stream: bool = False,
    ) -> Response:
        """Send the command and answer when its stage is reached or its time is up."""
        Authenticator.check_tenant(who, headers.tenant)
        try:
            self.aggregate.aggregate_id(command)
        except HandlerContractError as exc:
            raise invalid_body(str(exc), "aggregate_id", self.aggregate.id_field) from exc
        stage = Stage.parse(headers.wait_stage)
        timeout_s = timeout_of(self.settings, headers.wait_timeout_ms)
        command_id = str(headers.command_id or uuid.uuid4())
        name = self.command_type.__name__
        with _send_span(self.context, name, command_id, headers.traceparent) as traceparent:
            auth = self.authenticator.enabled
            issued_at = headers.issued_at
            kafka_headers: dict[str, str | None] = {
                "request_id": headers.request_id,
                # With auth off, Tenant and Principal are taken as they come (development).
                "tenant": who.tenant if auth else headers.tenant,
                "principal": who.principal if auth else headers.principal,
                "issued_at": issued_at.isoformat() if issued_at is not None else None,
                "traceparent": traceparent,
            }

            def send(on_stage: OnStage | None = None) -> Awaitable[Sent]:
                return self.bus.send(
                    command,
                    command_id=command_id,
                    stage=stage,
                    timeout_s=timeout_s,
                    headers=kafka_headers,
                    expected_version=headers.expected_version,
                    on_stage=on_stage,
                )

            if stream:
                return _stream(command_id, stage, send)
            try:
                sent = await unless_gone(receive, send())
            except ClientGone:  # its wait is released; nobody reads an answer
                self.metrics.abandoned.inc()
                return Response(status_code=499)
            except Unavailable as exc:
                self.metrics.unavailable.inc()
                raise _unavailable(exc, command_id) from exc
            except Unencodable as exc:
                raise invalid_body(str(exc), "unencodable") from exc
            self.metrics.answered(stage.label, sent)
            return _answer(sent.command_id, sent.known, stage, sent.replay)

    @property
    def description(self) -> str:
        return inspect.getdoc(self.command_type) or f"Send {self.command_type.__name__}."


class CommandLane:
    """The ASGI layer in front of FastAPI: it authenticates, and answers ``POST`` to
    command paths itself.

    With auth on, every request but the :data:`PUBLIC_PATHS` is authenticated here, before
    it is routed or its body read: a caller without a good credential gets 401 and learns
    nothing of the routes (not a 404 for a path that does not exist, a 405 or a 413). The
    verified caller goes on in the ASGI scope (:func:`scope_caller`).
    """

    def __init__(
        self, app: FastAPI, routes: dict[str, CommandRoute], authenticator: Authenticator
    ) -> None:
        self.app = app
        self.routes = routes
        self.authenticator = authenticator

    @property
    def state(self) -> Any:
        """The FastAPI application's state (``bus``, ``authenticator``)."""
        return self.app.state

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = self.routes.get(path)
        guarded = self.authenticator.enabled and not _public(path)
        if route is None and not guarded:
            await self.app(scope, receive, send)
            return
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if guarded:
            try:
                scope[_CALLER] = self.authenticator.caller(
                    raw.get("authorization"), raw.get("x-api-key")
                )
            except ProblemError as exc:
                await _problem(exc, path)(scope, receive, send)
                return
        if (
            route is None
            or scope["method"] != "POST"
            or "text/event-stream" in raw.get("accept", "")
        ):
            await self.app(scope, receive, send)  # FastAPI's routes (a command's streams)
            return
        who: Caller = scope.get(_CALLER, _ANONYMOUS)
        if not tracing_enabled():
            response = await self._respond(route, who, raw, receive)
        else:  # the request's server span, continuing the caller's trace
            with tracer.start_as_current_span(
                f"POST {route.path}",
                context=parent_context(raw.get("traceparent")),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "POST", "http.route": route.path},
            ) as span:
                response = await self._respond(route, who, raw, receive)
                span.set_attribute("http.response.status_code", response.status_code)
        await response(scope, receive, send)

    async def _respond(
        self, route: CommandRoute, who: Caller, raw: dict[str, str], receive: Receive
    ) -> Response:
        try:
            body = await _read_body(receive)
            headers = parse_headers(raw)
            return await route.answer(route.parse(body), who, headers, receive)
        except ProblemError as exc:
            return _problem(exc, route.path)


#: Paths open without a credential: the probes, the metrics, the contract and its docs.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
_PUBLIC_PREFIX = "/docs/static/"
#: The ASGI scope key of the verified caller.
_CALLER = "streamfold.caller"
_ANONYMOUS = Caller()


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIX)


def scope_caller(scope: MutableMapping[str, Any]) -> Caller | None:
    """The caller :class:`CommandLane` verified (None: it verified none)."""
    return scope.get(_CALLER)


def _problem(exc: ProblemError, path: str) -> Response:
    problem = exc.problem
    if problem.instance is None:
        problem = problem.model_copy(update={"instance": path})
    return problem_response(problem, exc.headers)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProblemError(400, "client-gone", "The client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ProblemError(413, "too-large", "The body is too large", f"over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def timeout_of(settings: GatewaySettings, wait_timeout_ms: int | None) -> float:
    """A wait's seconds: the header's, else the default; never past the cap."""
    wanted = settings.default_wait_ms if wait_timeout_ms is None else wait_timeout_ms
    return min(wanted, settings.max_wait_ms) / 1000


@contextmanager
def _send_span(
    context: str, command: str, command_id: str, traceparent: str | None
) -> Iterator[str | None]:
    """The ``traceparent`` a command goes out with.

    With a tracer provider (``STREAMFOLD_TRACING_OTLP_ENDPOINT``), a producer span under
    the request's span; without one, no span is made: the caller's ``traceparent`` goes on
    as it came, or a new trace starts here.
    """
    if not tracing_enabled():
        yield traceparent if parent_context(traceparent) is not None else new_traceparent()
        return
    # Under the request's server span (the lane's, or FastAPI's), which continues the
    # caller's trace; the caller's traceparent is the parent when there is none.
    serving = trace.get_current_span().get_span_context().is_valid
    with tracer.start_as_current_span(
        f"send {context}.{command}",
        context=None if serving else parent_context(traceparent),
        kind=SpanKind.PRODUCER,
        attributes={"streamfold.command_id": command_id},
    ) as span:
        yield traceparent_of(span)


def _answer(command_id: str, known: Known | None, stage: Stage, replay: bool) -> Response:
    status = status_of(command_id, known, replay=replay)
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
    code = 202 if reached < stage else 200
    return Json(status.model_dump(), status_code=code, headers=location)


def status_of(command_id: str, known: Known | None, *, replay: bool = False) -> CommandStatus:
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


def invalid_body(detail: str, kind: str, field: str | None = None) -> ProblemError:
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


class ClientGone(Exception):
    """The client hung up while its request waited (its wait was released)."""


async def unless_gone(receive: Receive, work: Awaitable[T]) -> T:
    """Run ``work`` unless the client disconnects first (then cancel it: ClientGone)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        abandoned = not task.done()
        if abandoned:  # the client left, or this request was cancelled: release the wait
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if abandoned:
        raise ClientGone
    return task.result()


async def _disconnect(receive: Receive) -> None:
    """Return when the client goes away (the body was read: ``receive`` waits for that)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _stream(
    command_id: str, stage: Stage, send: Callable[..., Awaitable[Sent]]
) -> StreamingResponse:
    """``text/event-stream``: an event per stage reached, then ``done`` or ``timeout``."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def on_stage(known: Known | None, reached: Stage) -> None:
        await queue.put(_event(reached.label, status_of(command_id, known).model_dump()))

    async def run() -> None:
        try:
            sent = await send(on_stage)
            status = status_of(command_id, sent.known, replay=sent.replay)
            reached = sent.known.stage if sent.known is not None else Stage.SENT
            kind = "done" if sent.acknowledged and reached >= stage else "timeout"
            body = {**status.model_dump(), "location": f"/commands/{command_id}"}
            await queue.put(_event(kind, body))
        except Unavailable as exc:
            problem = _unavailable(exc, command_id).problem
            await queue.put(_event("error", problem.model_dump(exclude_none=True)))
        except Unencodable as exc:
            problem = invalid_body(str(exc), "unencodable").problem
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
    return f"event: {kind}\ndata: {orjson.dumps(data).decode()}\n\n"


def fastapi_endpoint(route: CommandRoute) -> Callable[..., Awaitable[Response]]:
    """The FastAPI endpoint of ``route`` (its OpenAPI, and the streaming answers)."""

    async def endpoint(
        request: Request, command: Command, who: Caller, headers: CommandHeaders
    ) -> Response:
        stream = "text/event-stream" in request.headers.get("accept", "")
        return await route.answer(command, who, headers, request.receive, stream=stream)

    return endpoint
