"""A session's raw events: a page as JSON, or a live Server-Sent Events stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from service import keys as K
from service.api import sse
from service.api.deps import KeyDep, MetricsDep, RuntimeDep, StateDep, StoreDep, TenantCtx
from service.api.params import EventIdQuery, SessionId, StreamCursorQuery, StreamLastEventId
from service.api.routes import V1
from service.api.schemas import EventList
from service.errors import InvalidInput, SessionNotFound
from service.events import LIVE_MARK
from service.ids import validate_history_id, validate_stream_id

router = APIRouter(prefix=V1 + "/sessions/{session_id}/events", tags=["events"])


@router.get("", response_model=EventList)
async def get_events(
    session_id: SessionId,
    store: StoreDep,
    after: EventIdQuery = None,
    before: EventIdQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    reverse: bool = False,
    live: Annotated[
        bool,
        Query(
            description="Read the live window instead: recent transient events and copies "
            "of durable ones, oldest first (at most ``limit``; ``after``, ``before`` and "
            "``reverse`` do not apply: the document cannot say that a parameter excludes "
            "another, and a request it calls valid is served)"
        ),
    ] = False,
) -> Response:
    """A page of the durable history, oldest first (newest first with ``reverse``); with
    ``live``, what the live window still holds of the session."""
    for value in (after, before):
        if value is not None:
            validate_history_id(value)  # checked whatever is read
    if live:
        events = (await store.live_events(session_id))[:limit]
        return Response(orjson.dumps({"data": events}), media_type="application/json")
    if before is not None and not before.strip("0-"):
        await store.get(session_id)  # nothing is before 0-0: an empty page of a session that exists
        return Response(b'{"data":[]}', media_type="application/json")
    page = await store.read_events_json(
        session_id, after=after, before=before, limit=limit, reverse=reverse
    )
    # The store returns the page as one JSON array: spliced in, never decoded and re-encoded.
    return Response(b'{"data":' + page.encode() + b"}", media_type="application/json")


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {sse.MEDIA_TYPE: {}}, "description": "The event stream."},
        429: {"description": "The tenant has too many open event streams on this server."},
    },
)
async def stream_events(
    session_id: SessionId,
    request: Request,
    key: KeyDep,
    rt: RuntimeDep,
    state: StateDep,
    store: StoreDep,
    ctx: TenantCtx,
    m: MetricsDep,
    after: StreamCursorQuery = None,
    last_event_id: StreamLastEventId = None,
) -> StreamingResponse:
    """Every event after ``Last-Event-ID`` (else ``after``, else from the start), live. Ends with
    a final ``session.deleted`` when the session is deleted.

    The ``id:`` of a live event is ``L<live id>``: it resumes there while the live window
    still holds it. A history id (what events replayed from history carry, and every durable
    event's ``id``), or none, resumes after that event: on a single Redis, when the live window
    holds the event's copy from the last few seconds, from there (the transient events since
    included); else the durable history after it is replayed, then live events follow.
    Anything older gets a ``session.resync`` event (re-read the history), then live events
    from now."""
    given = [v for v in (last_event_id, after) if v is not None]
    for value in given:
        try:
            validate_stream_id(value.removeprefix(LIVE_MARK))
        except InvalidInput:
            raise InvalidInput(f"{value[:50]!r} is not an event id or live cursor") from None
    cursor = given[0] if given else None
    slots = state.streams
    assert slots is not None, "the API state is attached at start-up"
    slots.take(ctx.tenant.id)
    notify = asyncio.Event()
    try:
        lifecycle = await rt.store.hub.subscribe(
            K.lifecycle_key(rt.settings.key_prefix, ctx.tenant.id),
            field="session_id",
            value=session_id,
            notify=notify,
        )  # before the check, so no delete slips between
        try:
            if not await store.exists(session_id):
                raise SessionNotFound(
                    f"session {session_id!r} does not exist", session_id=session_id
                )
            following = await store.follow(session_id, cursor, notify)
        except BaseException:
            lifecycle.close()
            raise
        following.lifecycle = lifecycle
    except BaseException:
        slots.give(ctx.tenant.id)
        raise

    async def authorize() -> None:
        await rt.tenants.authenticate(key or "")

    async def body() -> AsyncIterator[bytes]:
        try:
            follow = sse.Follow(authorize, request.is_disconnected, m, share=key or "")
            async for chunk in sse.session_events(follow, store, following, session_id, notify):
                yield chunk
        finally:
            following.close()
            slots.give(ctx.tenant.id)

    return StreamingResponse(body(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
