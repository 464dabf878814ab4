"""``SessionClient``: the HTTP connection, retries, and the session-level calls.

Retries: a request that never reached the service (connection refused, pool timeout) is retried
whatever its method; other connection failures and 503 answers are retried, with exponential
backoff, for the calls that are safe to repeat (GET, PUT, DELETE) and for sends, which carry an
``Idempotency-Key`` so that a repeated send never makes a second message. A 429 is retried for any
call after its ``Retry-After``. ``max_retries`` bounds each of these.
"""

from __future__ import annotations

import asyncio
import os
import random
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from service.client._errors import (
    ServerError,
    ValidationError,
    _raise_for_response,
    retry_after_seconds,
)
from service.client._models import SessionInfo
from service.client._session import Session

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
RETRY_AFTER_MAX_S = 30.0
PAGE_SIZE = 100
# Errors raised before the request left this process: always safe to repeat.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# Option names accepted by create_session (snake_case, and the camelCase of the TypeScript SDK).
_CREATE_KEYS = {
    "session_id": "session_id",
    "sessionId": "session_id",
    "model": "model",
    "system_message": "system_message",
    "systemMessage": "system_message",
    "streaming": "streaming",
    "infinite_sessions": "infinite_sessions",
    "infiniteSessions": "infinite_sessions",
    "labels": "labels",
    "ttl_seconds": "ttl_seconds",
    "ttlSeconds": "ttl_seconds",
    "name": "name",
}
# Options resume_session may change on an existing session, with their PATCH field.
_RESUME_KEYS = {
    "name": "name",
    "labels": "labels",
    "ttl_seconds": "ttl_seconds",
    "ttlSeconds": "ttl_seconds",
    "infinite_sessions": "infinite",
    "infiniteSessions": "infinite",
}


def backoff_seconds(attempt: int) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
    delay: float = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    return delay * random.uniform(0.75, 1.25)


def _options(
    config: Mapping[str, Any] | None, kw: Mapping[str, Any], names: Mapping[str, str], what: str
) -> dict[str, Any]:
    """Merge a config dict and keywords (keywords win) into the service's field names."""
    merged = {**(config or {}), **kw}
    body: dict[str, Any] = {}
    for key, value in merged.items():
        field = names.get(key)
        if field is None:
            allowed = ", ".join(sorted(k for k in names if "_" in k or k.islower()))
            raise ValidationError(f"unknown {what} option {key!r} (known: {allowed})")
        if value is None:
            continue
        if field == "system_message" and isinstance(value, Mapping):
            value = value.get("content", "")  # the assistant SDKs' {"mode", "content"} shape
        body[field] = value
    return body


class SessionClient:
    """Client of the session service: ``async with SessionClient(url, api_key=...) as client``.

    ``api_key`` defaults to the ``SESSIONS_API_KEY`` environment variable. Pass ``transport``
    (for example ``httpx.ASGITransport(app)``) to talk to an app in the same process.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("SESSIONS_API_KEY")
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connection pool (the first call does it when this was not called)."""
        if self._http is None:
            headers = {"Accept": "application/json", "User-Agent": "sessions-client/0.1"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=self.timeout,
                transport=self._transport,
                # Every live listener holds a connection open; requests must not queue behind them.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
            )

    async def stop(self) -> None:
        """Stop every session's listeners and close the connection pool."""
        for session in list(self._sessions):
            await session.disconnect()
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self) -> SessionClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- sessions ------------------------------------------------------------------------------
    async def create_session(self, config: Mapping[str, Any] | None = None, **kw: Any) -> Session:
        """Create a session: ``session_id``, ``model``, ``system_message``, ``streaming``,
        ``infinite_sessions``, ``labels``, ``ttl_seconds``, ``name`` (all optional)."""
        body = _options(config, kw, _CREATE_KEYS, "session")
        response = await self._request("POST", "/v1/sessions", json=body)
        return self._session(SessionInfo.from_json(response.json()))

    async def resume_session(
        self, session_id: str, config: Mapping[str, Any] | None = None, **kw: Any
    ) -> Session:
        """A handle on an existing session (``SessionNotFound`` when there is none); ``name``,
        ``labels``, ``ttl_seconds`` and ``infinite_sessions`` given here are applied to it."""
        changes = _options(config, kw, _RESUME_KEYS, "resume")
        if changes:
            response = await self._request("PATCH", _path(session_id), json=changes)
        else:
            response = await self._request("GET", _path(session_id))
        return self._session(SessionInfo.from_json(response.json()))

    async def get_session_metadata(self, session_id: str) -> SessionInfo:
        response = await self._request("GET", _path(session_id))
        return SessionInfo.from_json(response.json())

    async def iter_sessions(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[SessionInfo]:
        """Sessions newest-modified first, page by page; at most ``limit`` when given."""
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            params: list[tuple[str, str | int]] = [("limit", min(size, 1000))]
            params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
            if cursor:
                params.append(("cursor", cursor))
            page = (await self._request("GET", "/v1/sessions", params=params)).json()
            for raw in page["data"]:
                yield SessionInfo.from_json(raw)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def list_sessions(
        self, *, labels: Mapping[str, str] | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        """Every session (or the ``limit`` most recently modified), newest-modified first."""
        return [info async for info in self.iter_sessions(labels=labels, limit=limit)]

    async def get_last_session_id(self) -> str | None:
        """The id of the most recently modified session, or None when there is none."""
        async for info in self.iter_sessions(limit=1):
            return info.session_id
        return None

    async def delete_session(self, session_id: str) -> None:
        """Delete a session and all its data for good (``SessionNotFound`` when there is none)."""
        await self._request("DELETE", _path(session_id))

    def _session(self, info: SessionInfo) -> Session:
        session = Session(self, info)
        self._sessions.add(session)
        return session

    # --- HTTP ----------------------------------------------------------------------------------
    async def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            await self.start()
        assert self._http is not None
        return self._http

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: bool | None = None,
        stream: bool = False,
        request_timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send a request with the retry policy and raise the mapped error for any non-2xx.
        With ``stream`` the body is left unread: the caller must close the response."""
        http = await self._client()
        repeatable = method in SAFE_METHODS if retry is None else retry
        request = http.build_request(
            method,
            path,
            json=json,
            params=params,
            headers=headers,
            timeout=request_timeout if request_timeout is not None else http.timeout,
        )
        attempt = 0
        while True:
            try:
                response = await http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < self.max_retries and (repeatable or isinstance(exc, _NOT_SENT)):
                    await asyncio.sleep(backoff_seconds(attempt))
                    attempt += 1
                    continue
                raise ServerError(
                    f"cannot reach the session service at {self.base_url}: {exc!r}"
                ) from exc
            status = response.status_code
            if status < 400:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if attempt < self.max_retries and (status == 429 or (status == 503 and repeatable)):
                hinted = retry_after_seconds(response)
                wait = backoff_seconds(attempt) if hinted is None else hinted
                await asyncio.sleep(min(wait, RETRY_AFTER_MAX_S))
                attempt += 1
                continue
            _raise_for_response(response)
            return response  # pragma: no cover - every status >= 400 raised above


def _path(session_id: str) -> str:
    """The URL path of a session. Ids that cannot be a path segment are refused here; any other
    id is sent percent-encoded and judged by the service."""
    if not isinstance(session_id, str) or session_id in ("", ".", "..") or "/" in session_id:
        raise ValidationError(f"invalid session id {session_id!r}")
    return f"/v1/sessions/{quote(session_id, safe='')}"
