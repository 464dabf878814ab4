"""Items of storage-only sessions: the app's own model loop appends, reads, pops and clears them;
no route here ever queues a turn."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from service import ids
from service.api.deps import StoreDep, TenantCtx
from service.api.params import SessionId
from service.api.routes import V1
from service.api.routes.messages import IDEMPOTENCY_KEY
from service.api.schemas import ItemList, ItemPopped, ItemsAppend, ItemsAppended, ItemsCleared
from service.store.items import MAX_ITEMS_PAGE

router = APIRouter(prefix=V1 + "/sessions/{session_id}/items", tags=["items"])


@router.post(
    "",
    status_code=201,
    response_model=ItemsAppended,
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def append_items(
    session_id: SessionId, body: ItemsAppend, ctx: TenantCtx, request: Request
) -> Response:
    """Append a batch of items in order, atomically (409 on a session that runs turns). Each
    item is at most the tenant's message byte limit (413). A repeated ``Idempotency-Key``
    stores nothing and returns the first item's id (``duplicate: true``)."""
    result = await ctx.store.append_items(
        session_id,
        body.items,
        idempotency_key=request.headers.get("idempotency-key"),
        max_item_bytes=ctx.tenant.limits.max_message_bytes or ctx.settings.max_message_bytes,
    )
    # the ItemsAppended document as a response of its own, as a send does: FastAPI would build
    # and check the model, then serialize it
    appended = {"ids": result.event_ids, "duplicate": result.duplicate}
    return Response(orjson.dumps(appended), 201, media_type="application/json")


@router.get("", response_model=ItemList)
async def read_items(
    session_id: SessionId,
    store: StoreDep,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ITEMS_PAGE,
            description="The newest N items; all (up to 10,000) when absent.",
        ),
    ] = None,
    before: Annotated[
        str | None,
        Query(
            description="An item id (`<ms>-<n>`, each part below 2^64 - 1): only items before it",
            json_schema_extra={
                "pattern": ids.ITEM_ID_PATTERN,
                "minLength": 1,
                "maxLength": ids.EVENT_ID_MAX,
            },
        ),
    ] = None,
) -> Response:
    """The newest ``limit`` items (before the item ``before``), oldest first, unchanged as
    appended. A page shorter than asked for is the start of the history; for older items,
    pass the first id as ``before``."""
    page = await store.read_items(session_id, limit=limit, before=before)
    # the stored JSON is spliced into the response as is: nothing is decoded per item
    return Response(page.json(), media_type="application/json")


@router.post("/pop", response_model=ItemPopped)
async def pop_item(session_id: SessionId, store: StoreDep) -> ItemPopped:
    """Remove the newest item atomically and return it (``id`` and ``item`` null when the
    session holds none)."""
    popped = await store.pop_item(session_id)
    if popped is None:
        return ItemPopped(id=None, item=None)
    return ItemPopped(id=popped[0], item=popped[1])


@router.delete("", response_model=ItemsCleared)
async def clear_items(session_id: SessionId, store: StoreDep) -> ItemsCleared:
    """Drop every item (and bookmark); the session keeps its id, TTL, labels and settings."""
    return ItemsCleared(removed=await store.clear_items(session_id))
