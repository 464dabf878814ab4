"""Server-Sent Events: framing, and the follow loops of a session's events and a tenant's
lifecycle stream.

Each loop waits for the process's one live reader (``service.store.hub``) to hand it entries, in
slices of ``WAIT_SLICE_MS``: an open stream holds no Redis connection of its own, and
``StreamSlots`` caps the open streams of a tenant per process (429 past the cap). It sends
``: keepalive`` after
``KEEPALIVE_SECONDS`` without an event, re-checks the key at most every ``REAUTH_SECONDS`` (a
disabled tenant or rotated key ends the stream), and ends when the client goes away. A session
stream also ends when the session is deleted or expires: it waits on the tenant's lifecycle stream
alongside the session's own events and sends a final ``session.deleted`` (or ``session.expired``).
A Redis failure ends the stream too; the client resumes with ``Last-Event-ID``: within the live
window it resumes exactly, beyond it the stream starts with ``session.resync`` (re-read history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from service import tracing
from service.api.shutdown import stopping
from service.errors import LimitExceeded, ServiceError, SessionNotFound, Unauthorized
from service.events import LIVE_MARK, live_json
from service.ids import id_order
from service.lifecycle import ENDING_TYPES, LifecycleEvent, entry_to_event
from service.logging import get_logger
from service.metrics import Metrics
from service.store import TenantStore
from service.store.hub import Subscription, is_gap
from service.store.live import START, Following, entry_parts

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


# Told when the stream fell further behind than its window (a paused process): entries were
# trimmed before it served them. No id: a client resumes after the last entry it had.
LIFECYCLE_RESYNC = frame(
    "lifecycle.resync",
    dumps({"reason": "the stream fell behind its window: re-list sessions (GET /v1/sessions)"}),
    None,
)


def lifecycle_frame(ev: LifecycleEvent, *, with_id: bool = True) -> bytes:
    return frame(ev.type, ev.model_dump_json(), ev.id if with_id else None)


# Re-checks of a key shared by the streams that use it: (started, outcome), one per key and
# REAUTH_SECONDS in this process, so a hundred streams of one tenant cost one check, not a
# hundred concurrent Redis calls (and pooled connections).
_CHECKS: dict[str, tuple[float, asyncio.Future[bool]]] = {}
KEPT_CHECKS = 10_000


class Follow:
    """What a follow loop needs besides its stream: the key check, disconnect probe, metrics.
    ``share`` names the credential: streams with the same one share its re-checks."""

    def __init__(
        self,
        authorize: Authorize,
        disconnected: Disconnected,
        metrics: Metrics,
        share: str | None = None,
    ) -> None:
        self.authorize = authorize
        self.disconnected = disconnected
        self.metrics = metrics
        self.share = share
        self._checked = time.monotonic()

    async def still_allowed(self) -> bool:
        """False once the client is gone or its key no longer works."""
        if await self.disconnected():
            return False
        now = time.monotonic()
        if now - self._checked < REAUTH_SECONDS:
            return True
        self._checked = now
        if self.share is None:
            return await self._check()
        shared = _CHECKS.get(self.share)
        if shared is None or now - shared[0] >= REAUTH_SECONDS:
            if len(_CHECKS) >= KEPT_CHECKS:
                _CHECKS.clear()
            shared = (now, asyncio.ensure_future(self._check()))
            _CHECKS[self.share] = shared
        return await asyncio.shield(shared[1])

    async def _check(self) -> bool:
        try:
            with tracing.untraced():  # every second for the stream's life: no span each time
                await self.authorize()
        except Unauthorized:
            return False
        return True


class StreamSlots:
    """Open event streams per tenant in this process, capped: an open stream costs no Redis
    connection (the process's one reader serves it), but it holds memory and a socket."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def take(self, tenant_id: str) -> None:
        count = self.open.get(tenant_id, 0)
        if count >= self.limit:
            raise LimitExceeded(
                f"tenant already has {count} open event streams on this server "
                f"(limit {self.limit}); close one or retry later",
                retry_after=RETRY_MS // 1000,
            )
        self.open[tenant_id] = count + 1

    def give(self, tenant_id: str) -> None:
        count = self.open.get(tenant_id, 0) - 1
        if count > 0:
            self.open[tenant_id] = count
        else:
            self.open.pop(tenant_id, None)


RESYNC = "session.resync"


BEYOND_WINDOW = "the requested position is beyond the live window"
FELL_BEHIND = "the stream fell behind the live window"


def resync_frame(session_id: str, last_event_id: str, reason: str = BEYOND_WINDOW) -> bytes:
    """Told when a stream cannot go on from where the client is: its ``Last-Event-ID`` is past
    the live window, or (mid-stream) the window was trimmed past events the stream had not yet
    served. What it missed is in the durable history, which it should re-read. Its SSE id is
    the session's newest durable event, so a client cut off before the next event resumes from
    there (the history after it, then live events), not from the start."""
    data = {"session_id": session_id, "reason": reason, "last_event_id": last_event_id}
    return frame(RESYNC, dumps(data), last_event_id or None)


async def session_events(
    follow: Follow,
    store: TenantStore,
    following: Following,
    session_id: str,
    notify: asyncio.Event,
) -> AsyncIterator[bytes]:
    """Every event of ``session_id`` from where ``following`` starts, live, until the session
    ends. Waits on the process's live reader, never on a Redis connection of its own."""
    follow.metrics.streams_open.inc()
    stop = _stop_relay(notify)
    quiet_since = time.monotonic()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        replayed = ""
        if following.resync:
            info = await store.get(session_id)
            yield resync_frame(session_id, info.last_event_id)
        elif following.replay_after is not None:
            cursor = None if following.replay_after == START else following.replay_after
            # up to the event whose copy the live entries start after, when known: what came
            # since, transient events included, comes from them, in order
            through = following.copy_of and id_order(following.copy_of)
            async for ev in store.iter_events(session_id, after=cursor):
                if through and id_order(ev["id"]) > through:
                    break
                yield frame(ev["type"], dumps(ev), ev["id"])
                replayed = ev["id"]
        done = replayed and id_order(replayed)
        look = False
        while True:
            if stop.done():  # the server is stopping: the client resumes elsewhere
                return
            got_any = False
            for entry in following.sub.take():
                if is_gap(entry):
                    try:
                        info = await store.get(session_id)
                    except SessionNotFound:  # gone meanwhile: said below, as its end
                        look = True
                        break
                    yield resync_frame(session_id, info.last_event_id, FELL_BEHIND)
                    got_any = True
                    continue
                live_id, history_id, body = entry_parts(entry)
                if history_id and done and id_order(history_id) <= done:
                    continue  # served from history already
                text = live_json(live_id, history_id, body)
                yield frame(_type_of(text), text, LIVE_MARK + live_id)
                got_any = True
            if following.lifecycle is not None:
                for entry_id, fields in following.lifecycle.take():
                    if is_gap((entry_id, fields)):  # its end may be among what was trimmed
                        look = True  # so: look for the session now
                        continue
                    ending = entry_to_event(entry_id, fields)
                    if ending.type in ENDING_TYPES:
                        yield lifecycle_frame(ending, with_id=False)
                        return
            if got_any:
                quiet_since = time.monotonic()
            if look or (not got_any and time.monotonic() - quiet_since >= KEEPALIVE_SECONDS):
                look = False
                with tracing.untraced():
                    gone = not await store.exists(session_id)
                if gone:  # expired before the sweeper saw it, or its end was trimmed unread
                    yield frame("session.expired", dumps({"session_id": session_id}))
                    return
                yield KEEPALIVE
                quiet_since = time.monotonic()
            if not await follow.still_allowed():
                return
            if not notify.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WAIT_SLICE_MS / 1000):
                        await notify.wait()
            notify.clear()
    except ServiceError as exc:
        log.warning("event stream ended by an error", error=type(exc).__name__)
    finally:
        stop.cancel()
        following.close()
        follow.metrics.streams_open.dec()


async def lifecycle_events(
    follow: Follow, sub: Subscription, notify: asyncio.Event
) -> AsyncIterator[bytes]:
    """Every lifecycle entry of ``sub``, live, until the client leaves."""
    follow.metrics.streams_open.inc()
    stop = _stop_relay(notify)
    quiet_since = time.monotonic()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            if stop.done():  # the server is stopping: the client resumes elsewhere
                return
            entries = sub.take()
            for entry in entries:
                if is_gap(entry):
                    yield LIFECYCLE_RESYNC
                    continue
                yield lifecycle_frame(entry_to_event(*entry))
            if entries:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield KEEPALIVE
                quiet_since = time.monotonic()
            if not await follow.still_allowed():
                return
            if not notify.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WAIT_SLICE_MS / 1000):
                        await notify.wait()
            notify.clear()
    except ServiceError as exc:
        log.warning("lifecycle stream ended by an error", error=type(exc).__name__)
    finally:
        stop.cancel()
        sub.close()
        follow.metrics.streams_open.dec()


def _stop_relay(notify: asyncio.Event) -> asyncio.Task[Any]:
    """A task that ends (and wakes the loop) once the server process is stopping."""

    async def relay() -> None:
        await stopping().wait()
        notify.set()

    return _task(relay())


def _task(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    return task


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _type_of(envelope: str) -> str:
    start = envelope.index('"type":"') + 8
    return envelope[start : envelope.index('"', start)]
