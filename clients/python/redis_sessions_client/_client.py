"""``SessionClient``: the async client: its HTTP connection, the retry loop, and the session-level
calls. The requests themselves are built in ``_requests`` and the retry decisions made in
``_retry``, both shared with ``SyncSessionClient``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from redis_sessions_client import _requests as calls
from redis_sessions_client._errors import Tries
from redis_sessions_client._lean import LeanHttp, usable
from redis_sessions_client._models import SessionInfo
from redis_sessions_client._requests import Call, body_of
from redis_sessions_client._session import Session

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_DEADLINE_S = 60.0
DEFAULT_MAX_RETRIES = 6  # backoff of about 11 s in all: an API pod restarting is ridden out


class SessionClient:
    """Async client of the session service: ``async with SessionClient(url, api_key=...)``.

    ``base_url`` defaults to ``SESSIONS_URL`` (else ``http://127.0.0.1:8000``), ``api_key`` to
    ``SESSIONS_API_KEY``. ``timeout`` bounds each try of a request; ``deadline`` bounds a whole
    call, retries included (None: no bound); ``max_retries`` bounds the retries. Pass
    ``transport`` (for example ``httpx.ASGITransport(app)``) to talk to an app in this process.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float | None = DEFAULT_DEADLINE_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = calls.base_url_of(base_url)
        self.api_key = calls.api_key_of(api_key)
        self.timeout = timeout
        self.deadline = deadline
        self.max_retries = max(0, max_retries)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._streams: httpx.AsyncClient | None = None
        self._lean: LeanHttp | None = None
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connection pool (the first call does it when this was not called)."""
        if self._http is None:
            self._http = self._pool()
            # Event streams get a pool of their own: every open one holds a connection, and
            # httpcore walks all of a pool's connections on each request, so fifty listeners in
            # the request pool made each send wait on that walk (the given transport, as in
            # tests, is shared as it is).
            self._streams = self._pool() if self._transport is None else self._http
            if self._transport is None and usable(self.base_url):
                self._lean = LeanHttp(self.base_url, calls.default_headers(self.api_key))

    def _pool(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=calls.default_headers(self.api_key),
            timeout=self.timeout,
            transport=self._transport,
            # Every live listener holds a connection open; requests must not queue behind them.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
        )

    async def stop(self) -> None:
        """Stop every session's listeners and close the connection pool."""
        for session in list(self._sessions):
            await session.disconnect()
        if self._lean is not None:
            lean, self._lean = self._lean, None
            await lean.aclose()
        if self._http is not None:
            http, streams, self._http, self._streams = self._http, self._streams, None, None
            await http.aclose()
            if streams is not None and streams is not http:
                await streams.aclose()

    async def __aenter__(self) -> SessionClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- sessions ------------------------------------------------------------------------------
    async def create_session(self, config: Mapping[str, Any] | None = None, **kw: Any) -> Session:
        """Create a session: ``session_id``, ``model``, ``system_message``, ``streaming``,
        ``infinite_sessions``, ``labels``, ``ttl_seconds``, ``name`` (all optional)."""
        response = await self._request(calls.create_session(config, kw))
        return self._session(SessionInfo.from_json(body_of(response)))

    async def resume_session(
        self, session_id: str, config: Mapping[str, Any] | None = None, **kw: Any
    ) -> Session:
        """A handle on an existing session (``SessionNotFound`` when there is none); ``name``,
        ``labels``, ``ttl_seconds`` and ``infinite_sessions`` given here are applied to it."""
        response = await self._request(calls.resume_session(session_id, config, kw))
        return self._session(SessionInfo.from_json(body_of(response)))

    async def get_session_metadata(self, session_id: str) -> SessionInfo:
        response = await self._request(Call("GET", calls.session_path(session_id)))
        return SessionInfo.from_json(body_of(response))

    async def iter_sessions(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = calls.SESSION_PAGE,
    ) -> AsyncIterator[SessionInfo]:
        """Sessions newest-modified first, page by page; at most ``limit`` when given."""
        calls.check_limit(limit)
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - seen)
            page = body_of(await self._request(calls.list_page(labels, size, cursor)))
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
        await self._request(Call("DELETE", calls.session_path(session_id)))

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
        call: Call,
        *,
        stream: bool = False,
        read_timeout: float | None = None,
        listen: bool = False,
    ) -> httpx.Response:
        """Send ``call`` with the retry policy; raise the mapped error for any non-2xx. With
        ``stream`` the body is left unread (the caller closes the response), and
        ``read_timeout`` bounds the silence between two chunks of it. ``listen``: an event
        stream, sent through the streams' own pool. An answer read whole goes through the
        lean HTTP/1.1 path where it applies (see ``_lean``)."""
        http = await self._client()
        if listen and self._streams is not None:
            http = self._streams
        lean = None if stream else self._lean
        tries = Tries(
            repeatable=call.may_repeat,
            max_retries=self.max_retries,
            deadline=self.deadline,
            base_url=self.base_url,
        )
        while True:
            per_try = tries.timeout(self.timeout)
            try:
                if lean is not None:
                    response = await lean.request(
                        call.method,
                        call.path,
                        json=call.json,
                        params=call.params,
                        headers=call.headers,
                        within=per_try,
                    )
                else:
                    request = calls.build(http, call, per_try, read_timeout)
                    response = await http.send(request, stream=stream)
            except httpx.TransportError as exc:
                await asyncio.sleep(tries.after_failure(exc))
                continue
            if response.status_code < 300:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            await asyncio.sleep(tries.after_answer(response))
