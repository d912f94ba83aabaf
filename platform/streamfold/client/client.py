"""The SDK's clients and errors (see :mod:`streamfold.client`)."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from streamfold.contracts.results import TENANT_MISMATCH
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command
from streamfold.domain.naming import command_path, snake_case
from streamfold.errors import PermanentError, Rejected, RetryableError, StreamfoldError
from streamfold.gateway.models import CommandStatus, Problem, QueryResult

__all__ = [
    "AggregateState",
    "AsyncClient",
    "Client",
    "ClientError",
    "CommandInvalid",
    "CommandPending",
    "CommandRejected",
    "GatewayUnavailable",
    "NotAuthorized",
    "NotFound",
]

Wait = Literal["sent", "processed", "projected"]
_SLACK_S = 5.0  # the HTTP timeout exceeds the wait by this much: the gateway answers first


class ClientError(StreamfoldError):
    """Something the gateway answered with a problem (``problem`` holds it)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail or problem.title)
        self.problem = problem


class CommandRejected(Rejected):
    """409: the aggregate refused the command (its ``code`` and ``message``)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.code or "rejected", problem.detail or problem.title)
        self.problem = problem
        self.current_version = problem.current_version
        self.command_id = problem.command_id


class CommandInvalid(ClientError, PermanentError):
    """422: the command (or a header) is not valid; ``problem.errors`` names the fields."""


class NotAuthorized(ClientError, PermanentError):
    """401 (no or a bad credential) or 403 (another tenant's data)."""


class NotFound(ClientError, PermanentError):
    """404: no such command outcome, aggregate or query."""


class GatewayUnavailable(RetryableError):
    """503, or the gateway did not answer: the command was not sent; retry it."""

    def __init__(self, message: str, problem: Problem | None = None) -> None:
        super().__init__(message)
        self.problem = problem


class CommandPending(StreamfoldError):
    """202: the command was sent, the stage was not reached in time (``status``)."""

    def __init__(self, status: CommandStatus) -> None:
        super().__init__(f"command {status.command_id} is at stage {status.stage}")
        self.status = status


@dataclass(frozen=True, slots=True)
class AggregateState:
    """An aggregate's state as projected; ``state`` is the model when the client knows it."""

    aggregate_type: str
    aggregate_id: str
    version: int
    updated_at: datetime
    tenant: str
    state: Any


class _Base:
    def __init__(
        self,
        url: str,
        *,
        context: BoundedContext | None,
        api_key: str | None,
        ca_location: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.context = context
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # An HTTPS gateway whose certificate a private CA signed: trust that CA's PEM file.
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_location)) if ca_location else True
        )

    def _command_request(
        self,
        command: Command,
        wait: Wait,
        timeout_ms: int,
        command_id: str | None,
        expected_version: int | None,
        request_id: str | None,
        issued_at: datetime | None,
        principal: str | None,
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        if self.context is None:
            raise PermanentError("send(command) needs the client's context= (or use send_json)")
        aggregate = self.context.aggregate_for(type(command))
        path = command_path(self.context.name, aggregate.name, type(command).__name__)
        body = command.model_dump(mode="json")
        headers = self._wait_headers(wait, timeout_ms, command_id, expected_version, request_id)
        if issued_at is not None:
            headers["Issued-At"] = issued_at.isoformat()
        if principal is not None:
            headers["Principal"] = principal
        return path, body, headers

    def _wait_headers(
        self,
        wait: Wait,
        timeout_ms: int,
        command_id: str | None,
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, str]:
        headers = {
            "Wait-Stage": wait,
            "Wait-Timeout-Ms": str(timeout_ms),
            "Command-Id": command_id or str(uuid.uuid4()),
        }
        if expected_version is not None:
            headers["Expected-Version"] = str(expected_version)
        if request_id is not None:
            headers["Request-Id"] = request_id
        return headers

    def _state_request(
        self, aggregate: str, aggregate_id: str, version: int | None, min_version: int | None
    ) -> tuple[str, dict[str, int]]:
        """The path and parameters of a state read."""
        if self.context is None:
            raise PermanentError("state() needs the client's context=")
        params = {k: v for k, v in (("version", version), ("min_version", min_version)) if v}
        return _quoted(self.context.name, aggregate, aggregate_id), params

    def _query_path(self, name: str, context: str | None) -> str:
        context = context or (self.context.name if self.context is not None else None)
        if context is None:
            raise PermanentError("query() needs a context")
        return f"/{context}/queries/{name}"

    @staticmethod
    def _follow_headers(wait: Wait, timeout: float) -> dict[str, str]:
        return {"Wait-Stage": wait, "Wait-Timeout-Ms": str(int(timeout * 1000))}

    def _state_from(self, aggregate: str, body: dict[str, Any]) -> AggregateState:
        state: Any = body["state"]
        if self.context is not None:
            state = self.context.get(aggregate).state_type.model_validate(state)
        return AggregateState(
            aggregate_type=body["aggregate_type"],
            aggregate_id=body["aggregate_id"],
            version=int(body["version"]),
            updated_at=datetime.fromisoformat(body["updated_at"]),
            tenant=body.get("tenant", ""),
            state=state,
        )

    @staticmethod
    def _status(response: httpx.Response) -> CommandStatus:
        _raise_for(response)
        status = CommandStatus.model_validate(response.json())
        if response.status_code == 202:
            raise CommandPending(status)
        return status

    @staticmethod
    def _path_of(openapi: dict[str, Any], context: str, command: str) -> str:
        suffix = f"/{snake_case(command)}"
        for path, item in openapi.get("paths", {}).items():
            if path.startswith(f"/{context}/") and path.endswith(suffix) and "post" in item:
                return str(path)
        raise NotFound(
            Problem(
                type="urn:streamfold:problem:not-found",
                title=f"the gateway has no command {context}.{command}",
                status=404,
            )
        )


def _raise_for(response: httpx.Response) -> None:
    """Raise the SDK error of a problem answer."""
    if response.status_code < 400:
        return
    try:
        problem = Problem.model_validate(response.json())
    except ValueError:
        problem = Problem(
            type="about:blank",
            title=response.reason_phrase,
            status=response.status_code,
            detail=response.text[:500],
        )
    status = response.status_code
    if status == 409 or (status == 403 and problem.code == TENANT_MISMATCH and problem.command_id):
        raise CommandRejected(problem)  # the worker's refusal of another tenant's aggregate
    if status == 422:
        raise CommandInvalid(problem)
    if status in (401, 403):
        raise NotAuthorized(problem)
    if status == 404:
        raise NotFound(problem)
    if status >= 500:
        raise GatewayUnavailable(problem.detail or problem.title, problem)
    raise ClientError(problem)


class Client(_Base):
    """A synchronous client of one gateway (see :mod:`streamfold.client`)."""

    def __init__(
        self,
        url: str,
        *,
        context: BoundedContext | None = None,
        api_key: str | None = None,
        http: httpx.Client | None = None,
        ca_location: Path | None = None,
    ) -> None:
        super().__init__(url, context=context, api_key=api_key, ca_location=ca_location)
        self._http = http or httpx.Client(
            base_url=self.url, headers=self._headers, verify=self._verify
        )
        self._paths: dict[tuple[str, str], str] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, timeout=timeout_s + _SLACK_S, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"the gateway at {self.url} did not answer: {exc}") from exc

    def send(
        self,
        command: Command,
        *,
        wait: Wait = "processed",
        timeout: float = 10.0,
        command_id: str | None = None,
        expected_version: int | None = None,
        request_id: str | None = None,
        issued_at: datetime | None = None,
        principal: str | None = None,
    ) -> CommandStatus:
        """Send ``command``; its status once ``wait`` is reached (else an error).

        ``issued_at``: when it happened at its source; ``principal``: who sent it (taken
        only when the gateway's auth is off: else the credential says who)."""
        timeout_ms = int(timeout * 1000)
        path, body, headers = self._command_request(
            command,
            wait,
            timeout_ms,
            command_id,
            expected_version,
            request_id,
            issued_at,
            principal,
        )
        return self._status(self._call("POST", path, timeout, json=body, headers=headers))

    def send_json(
        self,
        context: str,
        command: str,
        body: dict[str, Any],
        *,
        wait: Wait | str = "processed",
        timeout_ms: int = 10_000,
        command_id: str | None = None,
    ) -> CommandStatus:
        """Send a command given by name and JSON (its route found in the OpenAPI)."""
        key = (context, command)
        if key not in self._paths:
            openapi = self._call("GET", "/openapi.json", 10.0)
            _raise_for(openapi)
            self._paths[key] = self._path_of(openapi.json(), context, command)
        headers = self._wait_headers(wait, timeout_ms, command_id)  # type: ignore[arg-type]
        response = self._call(
            "POST", self._paths[key], timeout_ms / 1000, json=body, headers=headers
        )
        return self._status(response)

    def wait(
        self, command_id: str, *, wait: Wait = "processed", timeout: float = 10.0
    ) -> CommandStatus:
        """Wait for a command sent earlier (by anyone) to reach ``wait``."""
        headers = self._follow_headers(wait, timeout)
        return self._status(self._call("GET", f"/commands/{command_id}", timeout, headers=headers))

    def status(self, command_id: str) -> CommandStatus:
        """What the gateway knows of a command now."""
        response = self._call("GET", f"/commands/{command_id}", 10.0)
        _raise_for(response)
        return CommandStatus.model_validate(response.json())

    def state(
        self,
        aggregate: str,
        aggregate_id: str,
        *,
        version: int | None = None,
        min_version: int | None = None,
    ) -> AggregateState:
        """An aggregate's projected state (a version of it, or at least ``min_version``)."""
        path, params = self._state_request(aggregate, aggregate_id, version, min_version)
        response = self._call("GET", path, 10.0, params=params)
        _raise_for(response)
        return self._state_from(aggregate, response.json())

    def query(self, name: str, context: str | None = None, **params: Any) -> QueryResult:
        """The rows of a named query."""
        path = self._query_path(name, context)
        response = self._call("GET", path, 30.0, params=_params(params))
        _raise_for(response)
        return QueryResult.model_validate(response.json())


class AsyncClient(_Base):
    """The asyncio client of one gateway (the same calls as :class:`Client`)."""

    def __init__(
        self,
        url: str,
        *,
        context: BoundedContext | None = None,
        api_key: str | None = None,
        http: httpx.AsyncClient | None = None,
        max_connections: int = 100,
        ca_location: Path | None = None,
    ) -> None:
        super().__init__(url, context=context, api_key=api_key, ca_location=ca_location)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = http or httpx.AsyncClient(
            base_url=self.url, headers=self._headers, limits=limits, verify=self._verify
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, timeout_s: float, **kwargs: Any
    ) -> httpx.Response:
        try:
            return await self._http.request(method, path, timeout=timeout_s + _SLACK_S, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"the gateway at {self.url} did not answer: {exc}") from exc

    async def send(
        self,
        command: Command,
        *,
        wait: Wait = "processed",
        timeout: float = 10.0,
        command_id: str | None = None,
        expected_version: int | None = None,
        request_id: str | None = None,
        issued_at: datetime | None = None,
        principal: str | None = None,
    ) -> CommandStatus:
        timeout_ms = int(timeout * 1000)
        path, body, headers = self._command_request(
            command,
            wait,
            timeout_ms,
            command_id,
            expected_version,
            request_id,
            issued_at,
            principal,
        )
        return self._status(await self._call("POST", path, timeout, json=body, headers=headers))

    async def wait(
        self, command_id: str, *, wait: Wait = "processed", timeout: float = 10.0
    ) -> CommandStatus:
        headers = self._follow_headers(wait, timeout)
        response = await self._call("GET", f"/commands/{command_id}", timeout, headers=headers)
        return self._status(response)

    async def state(
        self,
        aggregate: str,
        aggregate_id: str,
        *,
        version: int | None = None,
        min_version: int | None = None,
    ) -> AggregateState:
        path, params = self._state_request(aggregate, aggregate_id, version, min_version)
        response = await self._call("GET", path, 10.0, params=params)
        _raise_for(response)
        return self._state_from(aggregate, response.json())

    async def query(self, name: str, context: str | None = None, **params: Any) -> QueryResult:
        path = self._query_path(name, context)
        response = await self._call("GET", path, 30.0, params=_params(params))
        _raise_for(response)
        return QueryResult.model_validate(response.json())


def _quoted(context: str, aggregate: str, aggregate_id: str) -> str:
    """The state path; the id is percent-encoded whole (``store-1/item-01`` holds a ``/``)."""
    return f"/{context}/{aggregate}/{quote(aggregate_id, safe='')}/state"


def _params(params: dict[str, Any]) -> dict[str, str]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else str(v) for k, v in params.items()}
