"""Following a session's live events over SSE, for each client: ``EventStream`` (async) and
``SyncEventStream``. Both reconnect after a drop with ``Last-Event-ID`` (so no event is missed
or seen twice), stop at the first event of a deleted session, refuse an answer that is not an
event stream (``ProtocolError``), and give up when no connection could be made again within
the client's deadline (the last error is raised).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import httpx

from redis_sessions_client._errors import RateLimited, ServerError
from redis_sessions_client._requests import Call
from redis_sessions_client._sse import (
    ENDING_TYPES,
    RECONNECT_MAX_S,
    STREAM_READ_TIMEOUT_S,
    aiter_sse,
    event_from_sse,
    is_event_stream,
    iter_sse_lines,
    not_an_event_stream,
    stream_request,
)

if TYPE_CHECKING:
    from redis_sessions_client._client import SessionClient
    from redis_sessions_client._models import Event
    from redis_sessions_client._sync import SyncSessionClient

log = logging.getLogger("redis_sessions_client")
HEAD_BYTES = 120  # of a wrong answer, quoted in the error
_DROPS = (httpx.TransportError, ServerError, RateLimited)


def reconnect_delay(attempt: int) -> float:
    return float(min(RECONNECT_MAX_S, 0.05 * 2**attempt))


class _Outage:
    """Time since the stream last worked; ``over`` once that exceeds the deadline."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.since: float | None = None

    def ok(self) -> None:
        self.since = None

    def over(self) -> bool:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        return self.deadline is not None and now - self.since >= self.deadline


def _gave_up(exc: Exception, path: str) -> ServerError:
    if isinstance(exc, ServerError):
        return exc
    return ServerError(f"the event stream {path} failed and could not be reopened: {exc!r}")


class EventStream:
    """The live events of a session; ``connect()`` may be awaited first to be sure the stream
    is open before something is sent."""

    def __init__(self, client: SessionClient, path: str, after: str | None) -> None:
        self._client = client
        self._path = path
        self.last_id = after
        self._response: httpx.Response | None = None

    async def connect(self) -> None:
        path, params, headers = stream_request(self._path, self.last_id)
        response = await self._client._request(
            Call("GET", path, params=params, headers=headers),
            stream=True,
            read_timeout=max(self._client.timeout, STREAM_READ_TIMEOUT_S),
            listen=True,
        )
        if not is_event_stream(response):
            head = b""
            async for chunk in response.aiter_bytes():
                head += chunk
                if len(head) >= HEAD_BYTES:
                    break
            await response.aclose()
            raise not_an_event_stream(response, head)
        self._response = response

    async def events(self) -> AsyncGenerator[Event, None]:
        attempt = 0
        outage = _Outage(self._client.deadline)
        while True:
            try:
                if self._response is None:
                    await self.connect()
                assert self._response is not None
                outage.ok()
                async for sse in aiter_sse(self._response):
                    attempt = 0
                    event = event_from_sse(sse.event, sse.data, sse.id)
                    # the SSE id is the resume cursor (L<live id> for live events)
                    self.last_id = sse.id or event.id
                    yield event
                    if event.type in ENDING_TYPES:
                        return
            except _DROPS as exc:
                log.debug("event stream of %s dropped: %r", self._path, exc)
                if outage.over():
                    raise _gave_up(exc, self._path) from exc
            finally:
                await self.aclose()
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()


class SyncEventStream:
    """``EventStream`` for the sync client. ``close()`` may be called from another thread.
    With ``until`` (a ``time.monotonic()`` value), ``events()`` raises ``TimeoutError`` when no
    event came before then."""

    def __init__(
        self, client: SyncSessionClient, path: str, after: str | None, *, until: float | None = None
    ) -> None:
        self._client = client
        self._path = path
        self.last_id = after
        self.until = until
        self._response: httpx.Response | None = None
        self.closed = False

    def _read_timeout(self) -> float:
        read = max(self._client.timeout, STREAM_READ_TIMEOUT_S)
        if self.until is None:
            return read
        left = self.until - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no event of {self._path} in time")
        return min(read, left)

    def connect(self) -> None:
        path, params, headers = stream_request(self._path, self.last_id)
        read = self._read_timeout()
        response = self._client._request(
            Call("GET", path, params=params, headers=headers), stream=True, read_timeout=read
        )
        if not is_event_stream(response):
            head = b""
            for chunk in response.iter_bytes():
                head += chunk
                if len(head) >= HEAD_BYTES:
                    break
            response.close()
            raise not_an_event_stream(response, head)
        self._response = response

    def events(self) -> Generator[Event, None, None]:
        attempt = 0
        outage = _Outage(self._client.deadline)
        while not self.closed:
            try:
                if self._response is None:
                    self.connect()
                assert self._response is not None
                outage.ok()
                for sse in iter_sse_lines(self._response.iter_lines()):
                    attempt = 0
                    event = event_from_sse(sse.event, sse.data, sse.id)
                    self.last_id = sse.id or event.id  # the resume cursor
                    yield event
                    if event.type in ENDING_TYPES:
                        return
            except _DROPS as exc:
                if self.closed:
                    return
                log.debug("event stream of %s dropped: %r", self._path, exc)
                self._read_timeout()  # TimeoutError once past ``until``
                if outage.over():
                    raise _gave_up(exc, self._path) from exc
            finally:
                self.close_response()
            if self.closed:
                return
            time.sleep(reconnect_delay(attempt))
            attempt += 1

    def close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def close(self) -> None:
        self.closed = True
        self.close_response()
