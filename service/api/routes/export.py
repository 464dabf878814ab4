"""Export of one session: metadata, bookmarks and every event, streamed page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service.api.deps import StoreDep
from service.api.params import SessionId
from service.api.routes import V1
from service.api.schemas import SessionExport, SessionPublic
from service.api.sse import dumps
from service.errors import ServiceError
from service.logging import get_logger
from service.store import TenantStore

router = APIRouter(prefix=V1 + "/sessions/{session_id}", tags=["export"])
log = get_logger("service.api.export")

NDJSON = "application/x-ndjson"


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "model": SessionExport,
            "content": {NDJSON: {}},
            "description": "json: one document; jsonl: the session, then one event per line.",
        }
    },
)
async def export_session(
    session_id: SessionId,
    store: StoreDep,
    format: Annotated[Literal["json", "jsonl"], Query()] = "json",
) -> StreamingResponse:
    """The whole session. ``json``: ``{"session", "bookmarks", "events"}``; ``jsonl``: a first
    line ``{"session": ...}``, then one event per line."""
    session = SessionPublic.of(await store.get(session_id)).model_dump_json()
    if format == "jsonl":
        head = f'{{"session":{session}}}\n'
        return StreamingResponse(_lines(store, session_id, head), media_type=NDJSON)
    bookmarks = dumps([b.model_dump(mode="json") for b in await store.list_bookmarks(session_id)])
    head = f'{{"session":{session},"bookmarks":{bookmarks},"events":['
    return StreamingResponse(_document(store, session_id, head), media_type="application/json")


async def _lines(store: TenantStore, session_id: str, head: str) -> AsyncIterator[bytes]:
    yield head.encode()
    try:
        async for ev in store.iter_events(session_id):
            yield (dumps(ev) + "\n").encode()
    except ServiceError as exc:
        log.warning("export cut short", error=type(exc).__name__)


async def _document(store: TenantStore, session_id: str, head: str) -> AsyncIterator[bytes]:
    yield head.encode()
    sep = ""
    try:
        async for ev in store.iter_events(session_id):
            yield (sep + dumps(ev)).encode()
            sep = ","
    except ServiceError as exc:
        log.warning("export cut short", error=type(exc).__name__)
        return  # the document stays unterminated, so no client mistakes it for complete
    yield b"]}"
