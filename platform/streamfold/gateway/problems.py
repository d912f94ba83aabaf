"""Error answers as RFC 9457 problem details (``application/problem+json``).

Every answer that is not a success is a :class:`Problem`: ``type`` names the kind (a URN,
stable, for a client to branch on), ``title`` says it for people, ``status`` repeats the
HTTP status, ``detail`` explains this occurrence. Extensions: ``code`` (the domain's or
streamfold's machine-readable code), ``command_id``, ``current_version`` (a rejection or a
version conflict), ``errors`` (each invalid field: its location and what is wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamfold.gateway.models import FieldError, Problem
from streamfold.observability.logging import get_logger

__all__ = [
    "PROBLEM_JSON",
    "FieldError",
    "Problem",
    "ProblemError",
    "install_problem_handlers",
    "problem_response",
    "validation_problem",
]

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
_URN = "urn:streamfold:problem:"


class ProblemError(Exception):
    """Raise in a route to answer with a problem."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.problem = Problem(
            type=_URN + kind, title=title, status=status, detail=detail, **extensions
        )
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _invalid(errors: Sequence[Any], where: tuple[str, ...] = ()) -> ProblemError:
    """The 422 of pydantic's ``errors()``, each location under ``where``."""
    fields = [
        FieldError(
            loc=[*where, *(p if isinstance(p, int) else str(p) for p in error["loc"])],
            message=str(error.get("msg", "")),
            type=str(error.get("type", "")),
        )
        for error in errors
    ]
    named = ", ".join(".".join(str(p) for p in e.loc) for e in fields)
    return ProblemError(
        422,
        "invalid-request",
        "The request is not valid",
        f"invalid: {named}" if named else None,
        errors=fields,
    )


def validation_problem(exc: ValidationError, where: str) -> ProblemError:
    """The 422 of a model that refused a request's ``where`` (``body``, ``header``)."""
    return _invalid(exc.errors(), (where,))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # its locations start with body, header...
    problem = _invalid(exc.errors()).problem
    return problem_response(problem.model_copy(update={"instance": request.url.path}))


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    problem = exc.problem
    if problem.instance is None:
        problem = problem.model_copy(update={"instance": request.url.path})
    return problem_response(problem, exc.headers)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # a body that cannot be parsed at all (not UTF-8, ...)
        return problem_response(
            Problem(
                type=_URN + "invalid-request",
                title="The request is not valid",
                status=422,
                detail=str(exc.detail),
                instance=request.url.path,
                errors=[FieldError(loc=["body"], message=str(exc.detail), type="body_invalid")],
            )
        )
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem_response(
        Problem(
            type=_URN + kind,
            title=str(exc.detail),
            status=exc.status_code,
            instance=request.url.path,
        ),
        dict(exc.headers) if exc.headers else None,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed", path=request.url.path, error=repr(exc))
    return problem_response(
        Problem(
            type=_URN + "internal",
            title="The gateway failed to answer",
            status=500,
            detail=type(exc).__name__,
            instance=request.url.path,
        )
    )


def install_problem_handlers(app: Any) -> None:
    """Answer validation errors, HTTP errors and :class:`ProblemError` as problems (and a
    bug as a logged 500 problem, never a bare traceback)."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
