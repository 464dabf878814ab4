"""``SyncSessionClient``: the blocking client, with the calls of ``SessionClient`` (the same
requests from ``_requests``, the same retry decisions from ``_retry``), sent with ``httpx.Client``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from redis_sessions_client import _requests as calls
from redis_sessions_client._client import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
)
from redis_sessions_client._errors import Tries
from redis_sessions_client._models import SessionInfo
from redis_sessions_client._requests import Call, body_of
from redis_sessions_client._sync_session import SyncSession


class SyncSessionClient:
    """Blocking client of the session service: ``with SyncSessionClient(url, api_key=...)``.

    The same options and calls as ``SessionClient``, without ``await``; ``session.on(...)``
    handlers run on a background thread of the session handle.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float | None = DEFAULT_DEADLINE_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = calls.base_url_of(base_url)
        self.api_key = calls.api_key_of(api_key)
        self.timeout = timeout
        self.deadline = deadline
        self.max_retries = max(0, max_retries)
        self._transport = transport
        self._http: httpx.Client | None = None
        self._sessions: list[SyncSession] = []

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the connection pool (the first call does it when this was not called)."""
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers=calls.default_headers(self.api_key),
                timeout=self.timeout,
                transport=self._transport,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
            )

    def stop(self) -> None:
        """Stop every session's listener and close the connection pool."""
        for session in self._sessions:
            session.disconnect()
        self._sessions.clear()
        if self._http is not None:
            http, self._http = self._http, None
            http.close()

    def __enter__(self) -> SyncSessionClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- sessions ------------------------------------------------------------------------------
    def create_session(self, config: Mapping[str, Any] | None = None, **kw: Any) -> SyncSession:
        """See ``SessionClient.create_session``."""
        response = self._request(calls.create_session(config, kw))
        return self._session(SessionInfo.from_json(body_of(response)))

    def resume_session(
        self, session_id: str, config: Mapping[str, Any] | None = None, **kw: Any
    ) -> SyncSession:
        """See ``SessionClient.resume_session``."""
        response = self._request(calls.resume_session(session_id, config, kw))
        return self._session(SessionInfo.from_json(body_of(response)))

    def get_session_metadata(self, session_id: str) -> SessionInfo:
        response = self._request(Call("GET", calls.session_path(session_id)))
        return SessionInfo.from_json(body_of(response))

    def iter_sessions(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = calls.SESSION_PAGE,
    ) -> Iterator[SessionInfo]:
        """Sessions newest-modified first, page by page; at most ``limit`` when given."""
        calls.check_limit(limit)
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - seen)
            page = body_of(self._request(calls.list_page(labels, size, cursor)))
            for raw in page["data"]:
                yield SessionInfo.from_json(raw)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def list_sessions(
        self, *, labels: Mapping[str, str] | None = None, limit: int | None = None
    ) -> list[SessionInfo]:
        return list(self.iter_sessions(labels=labels, limit=limit))

    def get_last_session_id(self) -> str | None:
        for info in self.iter_sessions(limit=1):
            return info.session_id
        return None

    def delete_session(self, session_id: str) -> None:
        self._request(Call("DELETE", calls.session_path(session_id)))

    def _session(self, info: SessionInfo) -> SyncSession:
        session = SyncSession(self, info)
        self._sessions = [s for s in self._sessions if s.listening] + [session]
        return session

    # --- HTTP ----------------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        if self._http is None:
            self.start()
        assert self._http is not None
        return self._http

    def _request(
        self,
        call: Call,
        *,
        stream: bool = False,
        read_timeout: float | None = None,
        within: float | None = None,
    ) -> httpx.Response:
        """``SessionClient._request``, blocking; ``within``: a deadline of this call's own,
        shorter than the client's."""
        http = self._client()
        deadline = self.deadline if within is None else min(within, self.deadline or within)
        tries = Tries(
            repeatable=call.may_repeat,
            max_retries=self.max_retries,
            deadline=deadline,
            base_url=self.base_url,
        )
        while True:
            per_try = tries.timeout(self.timeout)
            try:
                response = http.send(calls.build(http, call, per_try, read_timeout), stream=stream)
            except httpx.TransportError as exc:
                time.sleep(tries.after_failure(exc))
                continue
            if response.status_code < 300:
                return response
            if stream:
                response.read()
                response.close()
            time.sleep(tries.after_answer(response))
