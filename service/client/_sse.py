"""Server-Sent Events: a small parser for streaming httpx responses (the WHATWG framing), and
``EventStream``, which follows a session's events and reconnects after a drop.

Lines are ``field: value``; a blank line dispatches the event built so far. ``data`` lines join with
``\\n``; ``id`` sets the last event id (kept across events, as the spec says); lines starting with
``:`` are comments (the service's keepalives) and are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx

from service.client._errors import RateLimited, ServerError
from service.client._models import Event, parse_time

if TYPE_CHECKING:
    from service.client._client import SessionClient

log = logging.getLogger("service.client")
STREAM_READ_TIMEOUT_S = 45.0  # three keepalive periods of silence mean a dead connection
RECONNECT_MAX_S = 2.0
ENDING_TYPES = frozenset({"session.deleted", "session.expired"})  # the last event of a stream


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str
    retry: int | None = None


class SSEDecoder:
    """Feed it lines (without their line break); it returns an event at each dispatch."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data and not self._event:
            self._retry = None
            return None
        sse = ServerSentEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self._last_id,
            retry=self._retry,
        )
        self._event, self._data, self._retry = "", [], None
        return sse


async def aiter_sse_lines(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """The events of a stream of text lines; an event cut off by the end is dropped."""
    decoder = SSEDecoder()
    async for line in lines:
        sse = decoder.feed(line.rstrip("\r\n"))
        if sse is not None:
            yield sse


def aiter_sse(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The events of a streaming ``text/event-stream`` response."""
    return aiter_sse_lines(response.aiter_lines())


def id_key(event_id: str) -> tuple[int, int]:
    """Order of an event id (``<ms>-<seq>``)."""
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


def _event_from_sse(event_type: str, data: str, sse_id: str) -> Event:
    try:
        raw = json.loads(data) if data else {}
    except ValueError:
        raw = {"data": {"text": data}}
    if not isinstance(raw, dict):
        raw = {"data": {"value": raw}}
    if "type" in raw and "id" in raw and "timestamp" in raw:
        return Event.from_json(raw)
    # Not a session event: the final session.deleted/expired notice ({"id", "type", "at", ...}).
    body = raw.get("data")
    at = raw.get("at") or raw.get("timestamp")
    return Event(
        id=str(raw.get("id") or sse_id),
        type=str(raw.get("type") or event_type),
        data=body if isinstance(body, dict) else raw,
        timestamp=parse_time(at) if at else datetime.now(UTC),
    )


class EventStream:
    """The live events of a session over SSE, reconnecting with ``Last-Event-ID`` after a drop.
    ``events()`` ends after ``session.deleted`` (or ``session.expired``); ``connect()`` may be
    awaited first to be sure the stream is open before something is sent."""

    def __init__(self, client: SessionClient, path: str, after: str | None) -> None:
        self._client = client
        self._path = path + "/events/stream"
        self.last_id = after
        self._response: httpx.Response | None = None

    async def connect(self) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        params = {}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
            params["after"] = self.last_id
        timeout = httpx.Timeout(
            self._client.timeout, read=max(self._client.timeout, STREAM_READ_TIMEOUT_S)
        )
        self._response = await self._client._request(
            "GET", self._path, params=params, headers=headers, stream=True, request_timeout=timeout
        )

    async def events(self) -> AsyncGenerator[Event, None]:
        attempt = 0
        while True:
            try:
                if self._response is None:
                    await self.connect()
                assert self._response is not None
                async for sse in aiter_sse(self._response):
                    attempt = 0
                    event = _event_from_sse(sse.event, sse.data, sse.id)
                    self.last_id = event.id
                    yield event
                    if event.type in ENDING_TYPES:
                        return
            except (httpx.TransportError, ServerError, RateLimited) as exc:
                log.debug("event stream of %s dropped: %r", self._path, exc)
            finally:
                await self.aclose()
            await asyncio.sleep(min(RECONNECT_MAX_S, 0.05 * 2**attempt))
            attempt += 1

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()
