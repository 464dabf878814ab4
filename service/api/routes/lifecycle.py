"""The calling tenant's lifecycle stream (sessions created, updated, deleted, expired)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from service.api import params, sse
from service.api.deps import KeyDep, LifecycleDep, MetricsDep, RuntimeDep, StateDep, TenantCtx
from service.api.routes import V1
from service.api.schemas import LifecycleList
from service.ids import validate_stream_id

router = APIRouter(prefix=f"{V1}/lifecycle", tags=["lifecycle"])


@router.get("", response_model=LifecycleList)
async def read_lifecycle(
    lifecycle: LifecycleDep,
    after: Annotated[
        str,
        Query(description="An entry id (exclusive).", json_schema_extra=params.EVENT_ID_SCHEMA),
    ] = "0-0",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LifecycleList:
    """Entries after ``after``, oldest first (the stream keeps the latest 10,000 or so)."""
    return LifecycleList(data=await lifecycle.read(after, limit))


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {sse.MEDIA_TYPE: {}}, "description": "The lifecycle stream."}},
)
async def stream_lifecycle(
    request: Request,
    key: KeyDep,
    rt: RuntimeDep,
    lifecycle: LifecycleDep,
    state: StateDep,
    ctx: TenantCtx,
    m: MetricsDep,
    after: params.EventIdQuery = None,
    last_event_id: params.LastEventId = None,
) -> StreamingResponse:
    """Entries after ``Last-Event-ID`` (else ``after``; else only entries from now on), live."""
    given = [validate_stream_id(v) for v in (last_event_id, after) if v is not None]
    start = given[0] if given else None
    slots = state.streams
    assert slots is not None, "the API state is attached at start-up"
    slots.take(ctx.tenant.id)
    notify = asyncio.Event()
    try:
        sub = await rt.store.hub.subscribe(lifecycle.key, after=start, notify=notify)
    except BaseException:
        slots.give(ctx.tenant.id)
        raise

    async def authorize() -> None:
        await rt.tenants.authenticate(key or "")

    async def body() -> AsyncIterator[bytes]:
        try:
            follow = sse.Follow(authorize, request.is_disconnected, m, share=key or "")
            async for chunk in sse.lifecycle_events(follow, sub, notify):
                yield chunk
        finally:
            sub.close()
            slots.give(ctx.tenant.id)

    return StreamingResponse(body(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
