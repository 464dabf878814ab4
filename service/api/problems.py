"""The one place errors become HTTP responses: problem details (RFC 9457) as
``application/problem+json``, ``{"type", "title", "status", "detail", ...extra}``.

- ``ServiceError`` subclasses carry their own status and title (see ``service.errors``); their
  ``extra`` values join the body. 429 adds ``Retry-After``, 401 adds ``WWW-Authenticate``.
- Request validation: malformed JSON is 400, any other invalid input 422, with ``errors`` listing
  location, message and type of each problem (never the input itself, which may be a prompt).
- Starlette HTTP errors (unknown route 404, 405) keep their status.
- Anything else is a 500 without internals; the caller logs it (``middleware``).

Routes never build error responses: they raise, and these handlers answer.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import LimitExceeded, ServiceError, Unauthorized

PROBLEM_JSON = "application/problem+json"
MAX_LISTED_ERRORS = 20
_RESERVED = frozenset({"type", "title", "status", "detail"})


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


class Problem(BaseModel):
    """The body of every error response (more members may follow, e.g. ``errors``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str


# Documented on every route; replaces FastAPI's own 422 schema, which these handlers never send.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Problem, "description": "A client error, as application/problem+json."},
    "5XX": {"model": Problem, "description": "A server or Redis error (503 while Redis is down)."},
}


def problem_type(exc: ServiceError) -> str:
    """``/problems/session-not-found`` for ``SessionNotFound``: stable, one per error class."""
    slug = re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()
    return f"/problems/{slug}"


def error_type(exc: BaseException) -> str:
    """The ``type`` label of the error counter: a class name of a bounded set."""
    if isinstance(exc, ServiceError | RequestValidationError | StarletteHTTPException):
        return type(exc).__name__
    return "Unexpected"


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {k: v for k, v in (extra or {}).items() if k not in _RESERVED}
    body.update(
        type=type_,
        title=title or _phrase(status),
        status=status,
        detail=detail,
    )
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def from_service_error(exc: ServiceError) -> ProblemResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, LimitExceeded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after or 1)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, str | int | float | bool)}
    return problem(
        exc.status,
        exc.detail,
        title=exc.title,
        type_=problem_type(exc),
        headers=headers,
        extra=extra,
    )


def from_validation_error(exc: RequestValidationError) -> ProblemResponse:
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "invalid JSON")
            position = e.get("loc", ("body", "?"))[-1]
            return problem(
                400,
                f"request body is not valid JSON: {reason} at position {position}",
                title="Malformed JSON",
                type_="/problems/malformed-json",
            )
    listed = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return problem(
        422,
        f"{listed}{more}" or "invalid request",
        title="Invalid input",
        type_="/problems/invalid-input",
        extra={"errors": errors[:MAX_LISTED_ERRORS]},
    )


def from_http_error(exc: StarletteHTTPException) -> ProblemResponse:
    phrase = _phrase(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    if exc.status_code == 404 and detail == phrase:
        detail = "no such route"
    return problem(exc.status_code, detail, headers=exc.headers)


def unexpected(request_id: str) -> ProblemResponse:
    return problem(
        500,
        f"the service failed unexpectedly; quote request id {request_id} when reporting it",
        title="Internal error",
    )


def _where(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in {"body", "query", "path", "header"}:
        return f"{parts[0]} {'.'.join(parts[1:])}"
    return ".".join(parts) or "request"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _note(request: Request, exc: BaseException) -> None:
    """Leave the error type for the request middleware, which counts it, and for a server
    error (a 503 while Redis is away) what went wrong, for its log line."""
    request.state.error_type = error_type(exc)
    if isinstance(exc, ServiceError) and exc.status >= 500:
        request.state.error_detail = exc.detail


async def _on_service_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ServiceError)
    _note(request, exc)
    return from_service_error(exc)


async def _on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    _note(request, exc)
    return from_validation_error(exc)


def allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for this request's path. Starlette's own 405 names
    only the first route that matched the path, and FastAPI makes one route per operation."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template(template).fullmatch(request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    """``/v1/sessions/{session_id}`` as a pattern; a parameter is one path segment."""
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


async def _on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    _note(request, exc)
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request))
        exc = StarletteHTTPException(
            405, exc.detail, headers={**(exc.headers or {}), "Allow": allow}
        )
    return from_http_error(exc)


def install(app: FastAPI) -> None:
    """Register the handlers, and document error bodies as ``application/problem+json``."""
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI caches it in app.openapi_schema; edited in place
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if str(code)[0] in "45" and "application/json" in content:
                        response["content"] = {PROBLEM_JSON: content["application/json"]}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
