"""Server-Sent Events: a small parser for streaming httpx responses (the WHATWG framing), and
the parts of following a session's events that both clients share.

Lines are ``field: value``; a blank line dispatches the event built so far. ``data`` lines join with
``\\n``; ``id`` sets the last event id (kept across events, as the spec says); lines starting with
``:`` are comments (the service's keepalives) and are skipped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from redis_sessions_client._errors import ProtocolError, unexpected_answer
from redis_sessions_client._models import Event, id_key, parse_time

MEDIA_TYPE = "text/event-stream"
STREAM_READ_TIMEOUT_S = 45.0  # three keepalive periods of silence mean a dead connection
RECONNECT_MAX_S = 2.0
ENDING_TYPES = frozenset({"session.deleted", "session.expired"})  # the last event of a stream
RESYNC = "session.resync"  # the stream could not resume where asked: re-read the history
TRANSIENT_TYPES = frozenset(
    {
        "session.start", "assistant.turn_start", "assistant.message_delta", "assistant.turn_end",
        "assistant.usage", "session.idle", "session.title_changed", "session.compaction_start",
        "item.popped", "items.cleared",
    }
)  # fmt: skip
# (events the service keeps only in its live window; every other one is in the history)
OVERLAP_KEPT = 1000  # ids of a catch-up after a resync kept to know the resumed stream's copies


class Delivery:
    """What a handle's listener has handed on, to hand each durable event on once: the newest
    durable id (a catch-up after ``session.resync`` reads the history after it) and the ids the
    last catch-up handed on (the stream resumed a moment before that read, so it may bring the
    newest of them again). Durable events may arrive out of id order (on a Redis Cluster a live
    copy is published after its write): none is dropped for that."""

    def __init__(self, newest: str | None) -> None:
        self.newest = newest
        self._caught_up: set[str] = set()

    def fresh(self, event: Event) -> bool:
        """Whether to hand ``event`` on: not when it is the newest durable one again (a copy
        published after a connect that began past it) or one the catch-up handed on."""
        if event.type in TRANSIENT_TYPES or event.type in ENDING_TYPES or event.id.startswith("L"):
            return True  # (an ending notice has no id of its own; an L id: a type unknown here)
        if event.id == self.newest or event.id in self._caught_up:
            self._caught_up.discard(event.id)
            return False
        if self.newest is None or id_key(event.id) > id_key(self.newest):
            self.newest = event.id
        return True

    def catching_up(self) -> None:
        """A catch-up starts: the events it hands on go through ``fresh`` as any other."""
        self._caught_up.clear()

    def caught_up(self, events: list[Event]) -> None:
        self._caught_up.update(e.id for e in events[-OVERLAP_KEPT:])


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


def iter_sse_lines(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """``aiter_sse_lines`` for the sync client."""
    decoder = SSEDecoder()
    for line in lines:
        sse = decoder.feed(line.rstrip("\r\n"))
        if sse is not None:
            yield sse


def stream_request(path: str, last_id: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
    """Path, query and headers of a request for the events after ``last_id``."""
    headers = {"Accept": MEDIA_TYPE, "Cache-Control": "no-cache"}
    params: dict[str, str] = {}
    if last_id:
        headers["Last-Event-ID"] = last_id
        params["after"] = last_id
    return path + "/events/stream", params, headers


def is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == MEDIA_TYPE


def not_an_event_stream(response: httpx.Response, head: bytes) -> ProtocolError:
    """The error for a success that is not an event stream (``head``: its first bytes):
    following it would yield no events, and reconnecting would not change that."""
    return unexpected_answer(response, head, f", not {MEDIA_TYPE}", "Not an event stream")


def event_from_sse(event_type: str, data: str, sse_id: str) -> Event:
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
