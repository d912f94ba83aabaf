"""The Confluent Schema Registry REST API, as an ASGI application.

The paths, bodies, status codes and ``error_code`` values are Confluent's (see
:mod:`streamfold.registry.errors`), so confluent-kafka's ``SchemaRegistryClient`` and other
Confluent clients work unchanged. Paths are routed on the raw, still percent-encoded path, so a
subject may contain ``/`` written as ``%2F``. Answers are
``application/vnd.schemaregistry.v1+json``; requests may be that, ``application/json`` or
unlabelled JSON.

Writes go through :class:`~streamfold.registry.log.KafkaIntentLog`; reads come from the local
state, and a read that finds nothing first catches up with the log, so a caller reading from
any replica after a write sees it. Schema types other than Avro are refused with 42201.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import structlog

from streamfold.observability.logging import get_logger
from streamfold.registry import errors
from streamfold.registry.errors import RegistryApiError, RegistryStoreError
from streamfold.registry.log import KafkaIntentLog
from streamfold.registry.state import RegistryState, SubjectVersion, validate_level, validate_mode

__all__ = ["RegistryApp"]

log = get_logger(__name__)

CONTENT_TYPE = b"application/vnd.schemaregistry.v1+json"
MAX_BODY = 8 * 1024 * 1024
_NOT_FOUND_CODES = {40401, 40402, 40403, 40408, 40409}


@dataclass(slots=True)
class Request:
    """What a handler sees of an HTTP request."""

    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str, default: bool = False) -> bool:
        values = self.query.get(name)
        return default if not values else values[-1].strip().lower() == "true"

    def text(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def integer(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise errors.bad_request(f"query parameter {name!r} must be an integer") from None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, else a Confluent 400."""
        try:
            body = json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise errors.bad_request(f"malformed JSON in the request body: {exc}") from exc
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        return body


Handler = Callable[["RegistryApp", Request], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    parts: tuple[str, ...]  # literal segments, or "{name}" placeholders
    handler: Handler

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        if method != self.method or len(segments) != len(self.parts):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(self.parts, segments, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params


_ROUTES: list[_Route] = []


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    """Register a handler for ``method`` on ``path`` (``{name}`` marks a path parameter)."""

    def register(handler: Handler) -> Handler:
        _ROUTES.append(_Route(method, tuple(p for p in path.split("/") if p), handler))
        return handler

    return register


class RegistryApp:
    """The ASGI application; ``users`` enables HTTP basic auth (user name → password)."""

    def __init__(self, intent_log: KafkaIntentLog, users: Mapping[str, str] | None = None) -> None:
        self.log = intent_log
        self.state: RegistryState = intent_log.state
        self.users = dict(users or {})
        self._credentials = [(n.encode(), p.encode()) for n, p in self.users.items()]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        method = scope["method"]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            status, body, extra = await self._handle(method, raw_path, scope, headers, receive)
            if status >= 500:
                log.error("request failed", method=method, path=raw_path, status=status)
            else:
                log.debug("request", method=method, path=raw_path, status=status)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", CONTENT_TYPE),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-request-id", request_id.encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _handle(
        self,
        method: str,
        raw_path: str,
        scope: dict[str, Any],
        headers: dict[str, str],
        receive: Any,
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        segments = [unquote(s) for s in raw_path.split("?", maxsplit=1)[0].split("/") if s]
        if self.users and segments != ["healthz"] and not self._authorised(headers):
            return (
                401,
                {"error_code": 40101, "message": "Unauthorized"},
                [(b"www-authenticate", b'Basic realm="streamfold-registry"')],
            )
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        allowed = set()
        for candidate in _ROUTES:
            params = candidate.match(method, segments)
            if params is None:
                if candidate.match(candidate.method, segments) is not None:
                    allowed.add(candidate.method)
                continue
            try:
                body = await _read_body(receive) if method in ("POST", "PUT") else b""
                result = await candidate.handler(
                    self, Request(method, params, query, body, headers)
                )
            except (RegistryApiError, RegistryStoreError) as exc:
                return exc.status, exc.body(), []
            except Exception as exc:
                log.exception("unexpected error", method=method, path=raw_path)
                return 500, {"error_code": 500, "message": f"internal error: {exc}"}, []
            return 200, result, []
        if allowed:
            return 405, {"error_code": 405, "message": "HTTP 405 Method Not Allowed"}, []
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}, []

    def _authorised(self, headers: dict[str, str]) -> bool:
        """Whether the basic credentials name a user with that password.

        Compared as UTF-8 bytes in constant time, against every user (an unknown name
        costs what a known one does, so names cannot be told apart by timing); any
        malformed header is a plain refusal (401), never an error.
        """
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.encode("latin-1"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return False
        user, colon, password = decoded.partition(b":")
        matched = 0
        for name, secret in self._credentials:
            matched |= hmac.compare_digest(name, user) & hmac.compare_digest(secret, password)
        return bool(colon) and bool(matched)

    async def read(self, query: Callable[[], Any]) -> Any:
        """Answer ``query`` from local state; on not-found, catch up with the log and retry."""
        try:
            with self.log.lock:
                return query()
        except RegistryApiError as exc:
            if exc.code not in _NOT_FOUND_CODES and exc.code != 42201:
                raise
        await self.log.barrier()
        with self.log.lock:
            return query()


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.bad_request(f"request body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _version(raw: str) -> int | str:
    """A path version: a positive int, or ``latest`` (also written ``-1``); else 42202."""
    if raw == "latest":
        return "latest"
    try:
        value = int(raw)
    except ValueError:
        raise errors.invalid_version(raw) from None
    if value == -1:
        return "latest"
    if value < 1 or value > 2**31 - 1:
        raise errors.invalid_version(raw)
    return value


def _schema_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise errors.schema_not_found(f"Schema {raw} not found") from None


def _page(items: list[Any], request: Request) -> list[Any]:
    offset = max(0, request.integer("offset", 0))
    limit = request.integer("limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _schema_payload(body: dict[str, Any]) -> dict[str, Any]:
    schema = body.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise errors.bad_request("field 'schema' must be a string holding the schema's JSON")
    references = body.get("references")
    if references is not None and not isinstance(references, list):
        raise errors.bad_request("field 'references' must be a list")
    return {
        "schema": schema,
        "schemaType": body.get("schemaType"),
        "references": references or [],
        "metadata": body.get("metadata"),
        "ruleSet": body.get("ruleSet"),
    }


# -------------------------------------------------------------------- schemas


@route("GET", "/")
async def _root(app: RegistryApp, request: Request) -> Any:
    return {}


@route("GET", "/healthz")
async def _health(app: RegistryApp, request: Request) -> Any:
    return {"ready": app.log.ready.is_set(), "position": app.log.position}


@route("GET", "/contexts")
async def _contexts(app: RegistryApp, request: Request) -> Any:
    return ["."]


@route("GET", "/schemas/types")
async def _types(app: RegistryApp, request: Request) -> Any:
    return ["AVRO"]


@route("GET", "/schemas")
async def _schemas(app: RegistryApp, request: Request) -> Any:
    prefix = request.text("subjectPrefix") or ""
    deleted = request.flag("deleted")
    latest_only = request.flag("latestOnly")

    def query() -> list[dict[str, Any]]:
        found = []
        for subject in app.state.subject_names(deleted=deleted):
            if not subject.startswith(prefix):
                continue
            versions = app.state.versions(subject, deleted=deleted)
            for held in versions[-1:] if latest_only else versions:
                found.append(app.state.answer(held))
        return found

    return _page(await app.read(query), request)


@route("GET", "/schemas/ids/{id}")
async def _schema_by_id(app: RegistryApp, request: Request) -> Any:
    # ``subject`` is a hint for registries with contexts, not a filter: deserializers pass
    # their own subject naming, which need not be the one the schema was registered under.
    schema_id = _schema_id(request.params["id"])

    def query() -> dict[str, Any]:
        entry = app.state.schema(schema_id)
        return {**entry.to_dict(), "guid": entry.guid}

    return await app.read(query)


@route("GET", "/schemas/ids/{id}/schema")
async def _raw_schema_by_id(app: RegistryApp, request: Request) -> Any:
    schema_id = _schema_id(request.params["id"])
    return json.loads(await app.read(lambda: app.state.schema(schema_id).text))


@route("GET", "/schemas/guids/{guid}")
async def _schema_by_guid(app: RegistryApp, request: Request) -> Any:
    guid = request.params["guid"]

    def query() -> dict[str, Any]:
        entry = app.state.schema_by_guid(guid)
        return {**entry.to_dict(), "id": entry.schema_id, "guid": entry.guid}

    return await app.read(query)


@route("GET", "/schemas/ids/{id}/subjects")
async def _subjects_of_id(app: RegistryApp, request: Request) -> Any:
    schema_id = _schema_id(request.params["id"])
    subject = request.text("subject")
    deleted = request.flag("deleted")

    def query() -> list[str]:
        usages = app.state.usages(schema_id, deleted=deleted)
        return sorted({v.subject for v in usages if subject in (None, v.subject)})

    return _page(await app.read(query), request)


@route("GET", "/schemas/ids/{id}/versions")
async def _versions_of_id(app: RegistryApp, request: Request) -> Any:
    schema_id = _schema_id(request.params["id"])
    subject = request.text("subject")
    deleted = request.flag("deleted")

    def query() -> list[dict[str, Any]]:
        usages = app.state.usages(schema_id, deleted=deleted)
        return [
            {"subject": v.subject, "version": v.version}
            for v in usages
            if subject in (None, v.subject)
        ]

    return _page(await app.read(query), request)


# -------------------------------------------------------------------- subjects


@route("GET", "/subjects")
async def _subjects(app: RegistryApp, request: Request) -> Any:
    prefix = request.text("subjectPrefix") or ""
    deleted = request.flag("deleted")
    deleted_only = request.flag("deleted_only")

    def query() -> list[str]:
        names = app.state.subject_names(deleted=deleted, deleted_only=deleted_only)
        return [n for n in names if n.startswith(prefix)]

    return _page(await app.read(query), request)


@route("GET", "/subjects/{subject}/versions")
async def _subject_versions(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]
    deleted = request.flag("deleted")
    deleted_only = request.flag("deleted_only")

    def query() -> list[int]:
        held = app.state.versions(subject, deleted=deleted, deleted_only=deleted_only)
        return [v.version for v in held]

    return _page(await app.read(query), request)


@route("POST", "/subjects/{subject}/versions")
async def _register(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]
    body = request.json()
    payload = _schema_payload(body)
    for name in ("id", "version"):
        if body.get(name) is not None and body.get(name) != -1 and body.get(name) != 0:
            payload[name] = body[name]

    def existing() -> dict[str, Any] | None:
        # Validate here so garbage never reaches the log, and answer a schema the subject
        # already holds without a write (no compatibility check, as Confluent does).
        candidate = app.state.prepare(payload)
        if "id" in payload or "version" in payload:
            return None
        try:
            held = app.state.versions(subject)
        except RegistryApiError:
            return None
        for version in held:
            if app.state.schemas[version.schema_id].key == candidate.key:
                return app.state.answer(version)
        return None

    found = await app.read(existing)
    if found is None:
        found = await app.log.submit({"op": "register", "subject": subject, **payload})
        log.info("schema registered", subject=subject, id=found["id"], version=found["version"])
    return {"id": found["id"], "version": found["version"], "guid": found["guid"]}


@route("GET", "/subjects/{subject}/versions/{version}")
async def _get_version(app: RegistryApp, request: Request) -> Any:
    subject, version = request.params["subject"], _version(request.params["version"])
    deleted = request.flag("deleted")
    return await app.read(
        lambda: app.state.answer(app.state.version(subject, version, deleted=deleted))
    )


@route("GET", "/subjects/{subject}/versions/{version}/schema")
async def _get_version_schema(app: RegistryApp, request: Request) -> Any:
    subject, version = request.params["subject"], _version(request.params["version"])

    def query() -> str:
        held = app.state.version(subject, version, deleted=request.flag("deleted"))
        return app.state.schemas[held.schema_id].text

    return json.loads(await app.read(query))


@route("GET", "/subjects/{subject}/versions/{version}/referencedby")
async def _referenced_by(app: RegistryApp, request: Request) -> Any:
    subject, version = request.params["subject"], _version(request.params["version"])

    def query() -> list[int]:
        held = app.state.version(subject, version)
        return app.state.referenced_by(subject, held.version)

    return _page(await app.read(query), request)


@route("GET", "/subjects/{subject}/metadata")
async def _latest_with_metadata(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]
    keys = [unquote(k) for k in request.query.get("key", [])]
    values = [unquote(v) for v in request.query.get("value", [])]
    if len(keys) != len(values):
        raise errors.bad_request("metadata query needs as many 'value' as 'key' parameters")
    wanted = dict(zip(keys, values, strict=True))
    deleted = request.flag("deleted")

    def query() -> dict[str, Any]:
        for held in reversed(app.state.versions(subject, deleted=deleted)):
            metadata = app.state.schemas[held.schema_id].metadata or {}
            properties = metadata.get("properties") or {}
            if all(properties.get(k) == v for k, v in wanted.items()):
                return app.state.answer(held)
        raise errors.schema_not_found(f"Schema with metadata {wanted} not found")

    return await app.read(query)


@route("POST", "/subjects/{subject}")
async def _lookup(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]
    payload = _schema_payload(request.json())
    deleted = request.flag("deleted")
    return await app.read(
        lambda: app.state.answer(app.state.lookup(subject, payload, deleted=deleted))
    )


@route("DELETE", "/subjects/{subject}")
async def _delete_subject(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]
    await app.log.barrier()
    return await app.log.submit(
        {"op": "delete_subject", "subject": subject, "permanent": request.flag("permanent")}
    )


@route("DELETE", "/subjects/{subject}/versions/{version}")
async def _delete_version(app: RegistryApp, request: Request) -> Any:
    subject, version = request.params["subject"], _version(request.params["version"])
    if version == "latest":
        # Resolve "latest" here: the intent must name the version it deletes.
        held: SubjectVersion = await app.read(
            lambda: app.state.version(subject, "latest", deleted=request.flag("permanent"))
        )
        version = held.version
    await app.log.barrier()
    return await app.log.submit(
        {
            "op": "delete_version",
            "subject": subject,
            "version": version,
            "permanent": request.flag("permanent"),
        }
    )


# -------------------------------------------------------------------- compatibility


@route("POST", "/compatibility/subjects/{subject}/versions/{version}")
async def _compatible_with_version(app: RegistryApp, request: Request) -> Any:
    return await _compatibility(app, request, _version(request.params["version"]))


@route("POST", "/compatibility/subjects/{subject}/versions")
async def _compatible_with_subject(app: RegistryApp, request: Request) -> Any:
    return await _compatibility(app, request, None)


async def _compatibility(app: RegistryApp, request: Request, version: int | str | None) -> Any:
    subject = request.params["subject"]
    payload = _schema_payload(request.json())
    verbose = request.flag("verbose")

    def query() -> dict[str, Any]:
        candidate = app.state.prepare(payload)
        if version is None:
            if subject not in app.state.subject_names():
                return {"is_compatible": True, **({"messages": []} if verbose else {})}
            problems = app.state.incompatibilities(subject, candidate)
        else:
            held = app.state.version(subject, version)
            problems = app.state.incompatibilities(subject, candidate, only=held)
        answer: dict[str, Any] = {"is_compatible": not problems}
        if verbose:
            level = app.state.level(subject).value
            answer["messages"] = [
                *(p.confluent_message() for p in problems),
                *([f"{{compatibility: '{level}'}}"] if problems else []),
            ]
        return answer

    return await app.read(query)


# -------------------------------------------------------------------- config and mode


@route("GET", "/config")
async def _get_global_config(app: RegistryApp, request: Request) -> Any:
    return await app.read(lambda: dict(app.state.config))


@route("PUT", "/config")
async def _put_global_config(app: RegistryApp, request: Request) -> Any:
    return await _put_config(app, request, None)


@route("DELETE", "/config")
async def _delete_global_config(app: RegistryApp, request: Request) -> Any:
    return await app.log.submit({"op": "delete_config", "subject": None})


@route("GET", "/config/{subject}")
async def _get_config(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]

    def query() -> dict[str, Any]:
        config = app.state.subject_config(subject)
        if config is None:
            if request.flag("defaultToGlobal"):
                return dict(app.state.config)
            raise RegistryApiError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return dict(config)

    return await app.read(query)


@route("PUT", "/config/{subject}")
async def _put_subject_config(app: RegistryApp, request: Request) -> Any:
    return await _put_config(app, request, request.params["subject"])


@route("DELETE", "/config/{subject}")
async def _delete_config(app: RegistryApp, request: Request) -> Any:
    await app.log.barrier()
    return await app.log.submit({"op": "delete_config", "subject": request.params["subject"]})


async def _put_config(app: RegistryApp, request: Request, subject: str | None) -> Any:
    body = request.json()
    level = body.get("compatibility", body.get("compatibilityLevel"))
    if level is not None:
        validate_level(level)
    return await app.log.submit({"op": "set_config", "subject": subject, "config": body})


@route("GET", "/mode")
async def _get_global_mode(app: RegistryApp, request: Request) -> Any:
    return await app.read(lambda: {"mode": app.state.mode.value})


@route("PUT", "/mode")
async def _put_global_mode(app: RegistryApp, request: Request) -> Any:
    return await _put_mode(app, request, None)


@route("GET", "/mode/{subject}")
async def _get_mode(app: RegistryApp, request: Request) -> Any:
    subject = request.params["subject"]

    def query() -> dict[str, Any]:
        mode = app.state.subject_mode(subject)
        if mode is None:
            if request.flag("defaultToGlobal"):
                return {"mode": app.state.mode.value}
            raise RegistryApiError(
                404, 40409, f"Subject '{subject}' does not have subject-level mode configured"
            )
        return {"mode": mode.value}

    return await app.read(query)


@route("PUT", "/mode/{subject}")
async def _put_subject_mode(app: RegistryApp, request: Request) -> Any:
    return await _put_mode(app, request, request.params["subject"])


@route("DELETE", "/mode/{subject}")
async def _delete_mode(app: RegistryApp, request: Request) -> Any:
    await app.log.barrier()
    return await app.log.submit({"op": "delete_mode", "subject": request.params["subject"]})


async def _put_mode(app: RegistryApp, request: Request, subject: str | None) -> Any:
    mode = validate_mode(request.json().get("mode"))
    await app.log.barrier()
    return await app.log.submit(
        {"op": "set_mode", "subject": subject, "mode": mode.value, "force": request.flag("force")}
    )


# -------------------------------------------------------------------- not offered


def _associations_unsupported() -> RegistryApiError:
    return RegistryApiError(
        404, 404, "associations (a Confluent Cloud catalog feature) are not supported here"
    )


@route("POST", "/associations")
async def _create_association(app: RegistryApp, request: Request) -> Any:
    raise _associations_unsupported()


@route("GET", "/associations/resources/{namespace}/{name}")
async def _associations_of(app: RegistryApp, request: Request) -> Any:
    raise _associations_unsupported()


@route("DELETE", "/associations/resources/{id}")
async def _delete_associations(app: RegistryApp, request: Request) -> Any:
    raise _associations_unsupported()
