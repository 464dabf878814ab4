"""Bookmarks: named positions in a session's history, and what came after them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from service.api.deps import StoreDep
from service.api.params import BookmarkName, SessionId
from service.api.routes import V1
from service.api.routes.messages import message_page
from service.api.schemas import BookmarkList, BookmarkSet, EventList, MessageList
from service.models import Bookmark

router = APIRouter(prefix=V1 + "/sessions/{session_id}/bookmarks", tags=["bookmarks"])

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.put("/{name}", response_model=Bookmark)
async def set_bookmark(
    session_id: SessionId,
    name: BookmarkName,
    store: StoreDep,
    body: Annotated[BookmarkSet | None, Body()] = None,
) -> Bookmark:
    """Mark the session's current last event (replaces a bookmark of the same name)."""
    return await store.set_bookmark(session_id, name, body.description if body else "")


@router.get("", response_model=BookmarkList)
async def list_bookmarks(session_id: SessionId, store: StoreDep) -> BookmarkList:
    return BookmarkList(data=await store.list_bookmarks(session_id))


@router.get("/{name}", response_model=Bookmark)
async def get_bookmark(session_id: SessionId, name: BookmarkName, store: StoreDep) -> Bookmark:
    return await store.get_bookmark(session_id, name)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_bookmark(session_id: SessionId, name: BookmarkName, store: StoreDep) -> Response:
    await store.delete_bookmark(session_id, name)
    return Response(status_code=204)


@router.get("/{name}/messages", response_model=MessageList)
async def messages_since(
    session_id: SessionId, name: BookmarkName, store: StoreDep, limit: Limit = 1000
) -> Response:
    """Up to ``limit`` messages after the bookmark, as ``GET .../messages?after=<its event>``
    pages them: follow ``next_cursor`` (there, as ``after``) until it is null."""
    bookmark = await store.get_bookmark(session_id, name)
    return await message_page(store, session_id, bookmark.event_id, limit)


@router.get("/{name}/events", response_model=EventList)
async def events_since(
    session_id: SessionId, name: BookmarkName, store: StoreDep, limit: Limit = 1000
) -> EventList:
    """Events after the bookmark, oldest first."""
    events = await store.events_since_bookmark(session_id, name, limit=limit)
    return EventList.model_validate({"data": events})
