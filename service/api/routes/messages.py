"""Messages and turns: send a prompt (a turn for the workers), read the conversation, abort."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from service.api.deps import StoreDep, TenantCtx
from service.api.params import EventIdQuery, SessionId
from service.api.routes import V1
from service.api.schemas import AbortResult, MessageList, SendAccepted, SendMessage
from service.errors import PayloadTooLarge
from service.logging import bind_request
from service.models import EventType, Message, NewEvent
from service.store import MAX_PAGE, TenantStore

router = APIRouter(prefix=V1 + "/sessions/{session_id}", tags=["messages"])


# Read by the route itself and documented here: as a FastAPI header parameter it cost every
# send about as much as the JSON body's validation.
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-200 characters; a send repeated with the same key is stored once.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}


@router.post(
    "/messages",
    status_code=202,
    response_model=SendAccepted,
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def send_message(
    session_id: SessionId, body: SendMessage, ctx: TenantCtx, request: Request
) -> Response:
    """Append the prompt as a ``user.message`` and queue its turn. A repeated
    ``Idempotency-Key`` returns the first message id (``duplicate: true``), never a second turn."""
    idempotency_key = request.headers.get("idempotency-key")
    limit = ctx.tenant.limits.max_message_bytes or ctx.settings.max_message_bytes
    size = len(body.prompt.encode())
    if size > limit:
        raise PayloadTooLarge(f"prompt of {size} bytes is over the limit of {limit}", limit=limit)
    result = await ctx.store.append(
        session_id,
        [NewEvent(type=EventType.USER_MESSAGE.value, data={"content": body.prompt})],
        idempotency_key=idempotency_key,
        enqueue_turn=True,
    )
    message_id = result.event_ids[0]
    bind_request(message=message_id)  # for the request's log line and the turn job
    # Also for a duplicate: the job id is deterministic, so this never runs a turn twice, and
    # it heals a crash between the append and the enqueue of the first request.
    await ctx.queue.enqueue_turn(ctx.tenant.id, session_id, message_id)
    ctx.metrics.turns_enqueued.inc()
    # The SendAccepted document as a response of its own: on every send, FastAPI would build
    # and check the model, then serialize it.
    accepted = {"message_id": message_id, "duplicate": result.duplicate}
    return Response(orjson.dumps(accepted), 202, media_type="application/json")


SCAN_PAGES = 10  # event pages one request reads at most while looking for messages
MIN_SCAN = 100  # events a page reads at least, however few messages are still wanted


@router.get("/messages", response_model=MessageList)
async def get_messages(
    session_id: SessionId,
    store: StoreDep,
    after: EventIdQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Messages per page")] = 1000,
) -> Response:
    """The conversation, oldest first: up to ``limit`` user and assistant messages after the
    event ``after``. Other events (deltas, turn markers) are skipped; one request reads at most
    10,000 events, so a page may be short: follow ``next_cursor`` until it is null."""
    return await message_page(store, session_id, after, limit)


async def message_page(
    store: TenantStore, session_id: str, after: str | None, limit: int
) -> Response:
    """The ``MessageList`` of up to ``limit`` messages after the event ``after``."""
    out: list[Message] = []
    cursor = after
    # A short page costs a short read: about as many events as messages are wanted, with room
    # for a few others, and twice as many each time messages turn out sparse.
    size = min(MAX_PAGE, max(MIN_SCAN, limit + limit // 4))
    for _ in range(SCAN_PAGES):
        messages, last, more = await store.read_messages(session_id, after=cursor, limit=size)
        size = min(MAX_PAGE, 2 * size)  # (the first was at least all the messages wanted)
        if len(out) + len(messages) >= limit:
            taken = limit - len(out)
            out += messages[:taken]
            return _page(out, out[-1].id if more or taken < len(messages) else None)
        out += messages
        if not more:
            return _page(out, None)
        cursor = last
    return _page(out, cursor)


def _page(messages: list[Message], next_cursor: str | None) -> Response:
    """The ``MessageList`` document, serialized by orjson from the dataclasses (pydantic's
    check and serialization of a thousand messages cost more than reading them)."""
    body = orjson.dumps({"data": messages, "next_cursor": next_cursor})
    return Response(body, media_type="application/json")


@router.post("/abort", status_code=202, response_model=AbortResult)
async def abort(session_id: SessionId, store: StoreDep) -> AbortResult:
    """Drop the pending turns; ``aborted`` is false when none was pending."""
    result = await store.abort_turns(
        session_id,
        [
            NewEvent(type=EventType.ABORT.value, data={"reason": "requested"}),
            NewEvent(type=EventType.SESSION_IDLE.value),
        ],
    )
    return AbortResult(aborted=result is not None)
