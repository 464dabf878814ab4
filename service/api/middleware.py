"""Pure ASGI middleware: request context (id, logs, metrics, unexpected errors) and the request
body's bounds and type. Pure ASGI rather than ``BaseHTTPMiddleware``, so streamed responses pass
straight through.
"""

from __future__ import annotations

import asyncio
import email.message
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import tracing
from service.api import problems
from service.logging import bind_request, clear_request, get_logger
from service.metrics import UNMATCHED_ROUTE, Metrics

log = get_logger("service.api")

REQUEST_ID_HEADER = "X-Request-ID"
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _RequestIds:
    """Fresh request ids: 32 hex digits, a random per-process half and a counter (no system
    call per request; ids are for correlation, not secrets)."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


_request_ids = _RequestIds()


def request_id_from(value: str | None) -> str:
    """The caller's request id when it is a sane token, else a fresh one (32 hex digits)."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return _request_ids.next()


def header(scope: Scope, name: bytes) -> str | None:
    """A request header by its lower-case name (ASGI servers lower-case them)."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestContext:
    """Binds ``request_id`` (from ``X-Request-ID`` or new, echoed back) for every log line of the
    request, logs one line per request, records metrics, and turns an unexpected exception into a
    500 problem (logged with its traceback, never sent to the client)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not tracing.enabled():
            await self._handle(scope, receive, send)
            return
        parent = {"traceparent": value} if (value := header(scope, b"traceparent")) else None
        with tracing.span(scope["method"], kind="server", parent=parent) as current:
            status = await self._handle(scope, receive, send)
            route = route_template(scope)
            current.update_name(f"{scope['method']} {route}")
            tracing.set_attributes(
                current,
                **{
                    "http.request.method": scope["method"],
                    "http.route": route,
                    "http.response.status_code": status,
                    "request_id": tracing_request_id(scope),
                },
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """The request with its context; returns the response status."""
        request_id = request_id_from(header(scope, b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        clear_request()
        bind_request(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            state = _state(scope)
            state["error_type"] = "Unexpected"
            log.exception("unexpected error", method=scope["method"], route=route_template(scope))
            if not response_started:
                await problems.unexpected(request_id)(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            clear_request()
        return status

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope)
        state = _state(scope)
        self.metrics.observe_request(scope["method"], route, status, seconds)
        error = state.get("error_type")
        if error is not None:
            self.metrics.errors.labels(str(error)).inc()
        ids: dict[str, str] = {}
        if (session := scope.get("path_params", {}).get("session_id")) is not None:
            ids["session"] = session
        if status >= 500 and error is not None:  # what an operator looks for: at warning, why
            ids["error"] = str(error)
            if (detail := state.get("error_detail")) is not None:
                ids["detail"] = str(detail)
        (log.warning if status >= 500 else log.info)(
            "request",
            method=scope["method"],
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 2),
            tenant=state.get("tenant_id"),
            **ids,
        )


def tracing_request_id(scope: Scope) -> str | None:
    value = _state(scope).get("request_id")
    return value if isinstance(value, str) else None


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is JSON: ``application/json`` or ``application/*+json``, with
    any parameters."""
    if content_type is None:
        return False
    if content_type == "application/json" or content_type.startswith("application/json;"):
        return True
    msg = email.message.Message()
    msg["content-type"] = content_type
    subtype = msg.get_content_subtype()
    return msg.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class RequestBody:
    """Bounds and type of a request body, before anything parses it: 413 for one over
    ``max_bytes`` (at once from ``Content-Length``, else as soon as the chunks pass it), 408 for
    one that has not fully arrived ``timeout_seconds`` after the request began, so a client that
    sends slowly or stalls cannot hold a request open, and what ``body_refusal`` refuses (a body
    that is not JSON by its type, not UTF-8, or holds what no JSON reader takes back). A body is
    read here, up to the limit, and replayed; 413 and 408 close the connection, so the unread
    rest of the body is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        if length is not None:
            has_body = length != "0"
        else:
            has_body = "transfer-encoding" in headers or scope["method"] not in _BODILESS
        if not has_body:
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_seconds):
                messages = await self._read(receive)
        except TimeoutError:
            await self._refuse(
                scope,
                receive,
                send,
                408,
                f"request body did not arrive within {self.timeout_seconds:g} seconds",
                title="Request timeout",
                type_="/problems/request-timeout",
                error="RequestTimeout",
                extra={"timeout_seconds": self.timeout_seconds},
            )
            return
        if messages is None:
            await self._too_large(scope, receive, send)
            return
        refusal = body_refusal(headers.get("content-type"), messages[0].get("body", b""))
        if refusal is not None:
            await self._refuse(
                scope,
                receive,
                send,
                refusal.status,
                refusal.detail,
                title=refusal.title,
                type_=refusal.type_,
                error=refusal.error,
                extra=refusal.extra,
                close=False,
            )
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _read(self, receive: Receive) -> list[Message] | None:
        """The whole body as one message (or the message that ended it early, such as a
        disconnect); None once it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return [message]
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                return [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(
            scope,
            receive,
            send,
            413,
            f"request body is over the limit of {self.max_bytes} bytes",
            title="Payload too large",
            type_="/problems/payload-too-large",
            error="PayloadTooLarge",
            extra={"limit": self.max_bytes},
        )

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        detail: str,
        *,
        title: str,
        type_: str,
        error: str,
        extra: dict[str, Any],
        close: bool = True,
    ) -> None:
        _state(scope)["error_type"] = error
        response = problems.problem(
            status,
            detail,
            title=title,
            type_=type_,
            headers={"Connection": "close"} if close else None,
            extra=extra,
        )
        await response(scope, receive, send)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    detail: str
    title: str
    type_: str
    error: str  # the error counter's label
    extra: dict[str, Any] = field(default_factory=dict)


def body_refusal(content_type: str | None, body: bytes) -> Refusal | None:
    """Why a body, read whole, is refused before a route parses it: not JSON by its type (415;
    every body this API accepts is, and an empty one passes: the route says what is missing),
    not UTF-8 (400), or JSON that Python's parser takes and no other reader can (422)."""
    if body and not is_json(content_type):
        return Refusal(
            415,
            f"request body must be application/json (got {content_type or 'no content type'})",
            "Unsupported Media Type",
            "/problems/unsupported-media-type",
            "HTTPException",
        )
    encoding = json.detect_encoding(body)
    if encoding not in ("utf-8", "utf-8-sig"):
        return Refusal(
            400,
            f"request body must be UTF-8 JSON (RFC 8259), not {encoding}",
            "Malformed JSON",
            "/problems/malformed-json",
            "RequestValidationError",
        )
    why = not_json(body)
    if why is not None:
        errors = [{"loc": ["body"], "msg": why, "type": "value_error"}]
        return Refusal(
            422,
            f"request body holds {why}",
            "Invalid input",
            "/problems/invalid-input",
            "RequestValidationError",
            {"errors": errors},
        )
    return None


# What Python's parser takes and JSON does not hold: a surrogate, escaped or as the bytes that
# would encode it in UTF-8 (Python decodes them with surrogatepass), NaN and Infinity, a number
# beyond a double (1e999, or 309 digits and more). Only a body with such a token is parsed again.
_SUSPECT = re.compile(
    rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\xed[\xa0-\xbf]|NaN|Infinity|[eE][+-]?[0-9]{3}|[0-9]{309}"
)
_BOM = b"\xef\xbb\xbf"  # Python's parser skips it; orjson does not


def not_json(body: bytes) -> str | None:
    """Why a body that Python's parser takes is not JSON any other reader can take back, if it
    is not: a lone UTF-16 surrogate (an escape such as ``\\ud800``; a pair, an emoji's
    ``\\ud83d\\ude00``, is text), which no UTF-8 text holds (Redis, a client, an export), or
    NaN, Infinity or a number that overflows a double, which JSON has no way to write. Taken,
    they were stored and failed every read after, or came back as ``null``."""
    if _SUSPECT.search(body) is None:
        return None
    try:
        orjson.loads(body.removeprefix(_BOM))
    except orjson.JSONDecodeError as exc:
        what = str(exc)
        if "surrogate" in what:
            where = "in UTF-8 bytes" if "UTF-8" in what else f"at character {exc.pos}"
            return f"a lone UTF-16 surrogate {where}: strings must be Unicode text"
        try:
            json.loads(body)
        except (ValueError, RecursionError):
            return None  # malformed (or nested too deep) for both: the route says so
        return f"NaN, Infinity or a number beyond a double at character {exc.pos}: JSON has none"
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state
