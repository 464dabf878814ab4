"""Server-Sent Events: framing, and the follow loops of a session's events and a tenant's
lifecycle stream.

Each loop waits on Redis in slices of ``WAIT_SLICE_MS`` (shorter than the data client's socket
timeout, which would otherwise cut a blocking read), sends ``: keepalive`` after
``KEEPALIVE_SECONDS`` without an event, re-checks the key at most every ``REAUTH_SECONDS`` (a
disabled tenant or rotated key ends the stream), and ends when the client goes away. A session
stream also ends when the session is deleted or expires: it waits on the tenant's lifecycle stream
alongside the session's own events and sends a final ``session.deleted`` (or ``session.expired``).
A Redis failure ends the stream too; the client resumes with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from service.api.shutdown import stopping
from service.errors import ServiceError, Unauthorized
from service.lifecycle import ENDING_TYPES, LifecycleEvent, LifecycleReader
from service.logging import get_logger
from service.metrics import Metrics
from service.store import TenantStore

log = get_logger("service.api.sse")

KEEPALIVE_SECONDS = 15.0
WAIT_SLICE_MS = 4_000
REAUTH_SECONDS = 1.0
RETRY_MS = 2_000
KEEPALIVE = b": keepalive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"

Authorize = Callable[[], Awaitable[object]]
Disconnected = Callable[[], Awaitable[bool]]


def frame(event_type: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE message; ``data`` must be a single line (compact JSON is)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {data}\n\n".encode()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def lifecycle_frame(ev: LifecycleEvent, *, with_id: bool = True) -> bytes:
    return frame(ev.type, ev.model_dump_json(), ev.id if with_id else None)


class Follow:
    """What a follow loop needs besides its stream: the key check, disconnect probe, metrics."""

    def __init__(self, authorize: Authorize, disconnected: Disconnected, metrics: Metrics) -> None:
        self.authorize = authorize
        self.disconnected = disconnected
        self.metrics = metrics
        self._checked = time.monotonic()

    async def still_allowed(self) -> bool:
        """False once the client is gone or its key no longer works."""
        if await self.disconnected():
            return False
        if time.monotonic() - self._checked < REAUTH_SECONDS:
            return True
        self._checked = time.monotonic()
        try:
            await self.authorize()
        except Unauthorized:
            return False
        return True


async def session_events(
    follow: Follow,
    store: TenantStore,
    lifecycle: LifecycleReader,
    session_id: str,
    *,
    after: str,
    lifecycle_after: str,
) -> AsyncIterator[bytes]:
    """Every event of ``session_id`` after ``after``, live, until the session ends."""
    follow.metrics.streams_open.inc()
    events: asyncio.Task[Any] | None = None
    ends: asyncio.Task[list[LifecycleEvent]] | None = None
    stop = _task(stopping().wait())
    quiet_since = time.monotonic()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            if events is None:
                events = _task(store.wait_events(session_id, after, timeout_ms=WAIT_SLICE_MS))
            if ends is None:
                ends = _task(lifecycle.wait(lifecycle_after, timeout_ms=WAIT_SLICE_MS))
            done, _ = await asyncio.wait({events, ends, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done:  # the server is stopping: the client resumes elsewhere
                return
            got_any = False
            if events in done:
                batch, events = events.result(), None
                for ev in batch:
                    yield frame(ev["type"], dumps(ev), ev["id"])
                    after = ev["id"]
                got_any = bool(batch)
            if ends in done:
                entries, ends = ends.result(), None
                for entry in entries:
                    lifecycle_after = entry.id
                    if entry.session_id == session_id and entry.type in ENDING_TYPES:
                        yield lifecycle_frame(entry, with_id=False)
                        return
            if got_any:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                if not await store.exists(session_id):  # expired before the sweeper saw it
                    yield frame("session.expired", dumps({"session_id": session_id}))
                    return
                yield KEEPALIVE
                quiet_since = time.monotonic()
            if not await follow.still_allowed():
                return
    except ServiceError as exc:
        log.warning("event stream ended by an error", error=type(exc).__name__)
    finally:
        _cancel(events, ends, stop)
        follow.metrics.streams_open.dec()


async def lifecycle_events(
    follow: Follow, lifecycle: LifecycleReader, *, after: str
) -> AsyncIterator[bytes]:
    """Every lifecycle entry after ``after``, live, until the client leaves."""
    follow.metrics.streams_open.inc()
    stop = _task(stopping().wait())
    quiet_since = time.monotonic()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            waiting = _task(lifecycle.wait(after, timeout_ms=WAIT_SLICE_MS))
            await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():  # the server is stopping: the client resumes elsewhere
                waiting.cancel()
                return
            entries = waiting.result()
            for entry in entries:
                yield lifecycle_frame(entry)
                after = entry.id
            if entries:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield KEEPALIVE
                quiet_since = time.monotonic()
            if not await follow.still_allowed():
                return
    except ServiceError as exc:
        log.warning("lifecycle stream ended by an error", error=type(exc).__name__)
    finally:
        _cancel(stop)
        follow.metrics.streams_open.dec()


def _task(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    return task


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _cancel(*tasks: asyncio.Task[Any] | None) -> None:
    for task in tasks:
        if task is not None:
            task.cancel()
