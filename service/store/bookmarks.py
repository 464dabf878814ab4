"""Bookmarks: named positions in a session's history."""

from __future__ import annotations

import json

from service.errors import (
    BookmarkNotFound,
    InvalidInput,
    LimitExceeded,
)
from service.ids import id_order, validate_bookmark_name
from service.models import (
    Bookmark,
    Event,
)
from service.store.base import MAX_BOOKMARKS, MAX_PAGE, _bookmark, _missing
from service.store.history import HistoryOps


class BookmarkOps(HistoryOps):
    """Set, list, read and delete bookmarks."""

    async def set_bookmark(self, session_id: str, name: str, description: str = "") -> Bookmark:
        validate_bookmark_name(name)
        if len(description) > 1000:
            raise InvalidInput("bookmark description must be at most 1000 characters")
        partial = json.dumps({"name": name, "description": description}, ensure_ascii=False)
        args: list[str | int] = [name, partial, MAX_BOOKMARKS]
        res = await self._run("set_bookmark", session_id, args, "set a bookmark")
        if res[0] == "missing":
            raise _missing(session_id)
        if res[0] == "limit":
            raise LimitExceeded(
                f"session {session_id!r} already holds {MAX_BOOKMARKS} bookmarks", limit="bookmarks"
            )
        return _bookmark(res[1])

    async def list_bookmarks(self, session_id: str) -> list[Bookmark]:
        """The session's bookmarks in history order; a session of the earlier layout is
        converted first, so they name the ids its history has."""
        keys = self._session_keys(session_id)
        exists, raw = await self._read_converted(
            session_id,
            "read bookmarks",
            lambda pipe: (pipe.exists(keys.meta), pipe.hgetall(keys.bookmarks)),
        )
        if not exists:
            raise _missing(session_id)
        return sorted((_bookmark(v) for v in raw.values()), key=lambda b: id_order(b.event_id))

    async def get_bookmark(self, session_id: str, name: str) -> Bookmark:
        validate_bookmark_name(name)
        for bm in await self.list_bookmarks(session_id):
            if bm.name == name:
                return bm
        raise BookmarkNotFound(f"bookmark {name!r} does not exist in session {session_id!r}")

    async def delete_bookmark(self, session_id: str, name: str) -> None:
        validate_bookmark_name(name)
        res = await self._run("delete_bookmark", session_id, [name], "delete a bookmark")
        if res[0] == "missing":
            raise _missing(session_id)
        if int(res[1]) == 0:
            raise BookmarkNotFound(f"bookmark {name!r} does not exist in session {session_id!r}")

    async def events_since_bookmark(
        self, session_id: str, name: str, *, limit: int = MAX_PAGE
    ) -> list[Event]:
        bm = await self.get_bookmark(session_id, name)
        return await self.read_events(session_id, after=bm.event_id, limit=limit)
