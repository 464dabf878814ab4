"""A session's raw events: a page as JSON, or a live Server-Sent Events stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from service.api import sse
from service.api.deps import KeyDep, LifecycleDep, MetricsDep, RuntimeDep, StoreDep
from service.api.params import EventIdQuery, LastEventId, SessionId
from service.api.routes import V1
from service.api.schemas import EventList
from service.errors import SessionNotFound
from service.ids import validate_stream_id

router = APIRouter(prefix=V1 + "/sessions/{session_id}/events", tags=["events"])


@router.get("", response_model=EventList)
async def get_events(
    session_id: SessionId,
    store: StoreDep,
    after: EventIdQuery = None,
    before: EventIdQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    reverse: bool = False,
) -> Response:
    """A page of events, oldest first (newest first with ``reverse``)."""
    if before is not None and not validate_stream_id(before).strip("0-"):
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
    responses={200: {"content": {sse.MEDIA_TYPE: {}}, "description": "The event stream."}},
)
async def stream_events(
    session_id: SessionId,
    request: Request,
    key: KeyDep,
    rt: RuntimeDep,
    store: StoreDep,
    lifecycle: LifecycleDep,
    m: MetricsDep,
    after: EventIdQuery = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Every event after ``Last-Event-ID`` (else ``after``, else from the start), live. Ends with
    a final ``session.deleted`` when the session is deleted."""
    given = [validate_stream_id(v) for v in (last_event_id, after) if v is not None]
    start = given[0] if given else "0-0"
    lifecycle_after = await lifecycle.last_id()  # before the check, so no delete slips between
    if not await store.exists(session_id):
        raise SessionNotFound(f"session {session_id!r} does not exist", session_id=session_id)

    async def authorize() -> None:
        await rt.tenants.authenticate(key or "")

    follow = sse.Follow(authorize, request.is_disconnected, m)
    body = sse.session_events(
        follow, store, lifecycle, session_id, after=start, lifecycle_after=lifecycle_after
    )
    return StreamingResponse(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
