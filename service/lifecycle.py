"""The per-tenant lifecycle stream: ``session.created/updated/deleted/expired`` entries that apps
consume to react to sessions coming and going.

The store and the sweeper write the stream (capped at ``store.LIFECYCLE_MAXLEN`` entries); this
module only reads it. Each entry has the fields ``type``, ``session_id`` and ``at`` (server time in
ms when it happened).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel

from service import keys as K
from service.connections import RedisClient, store_errors
from service.errors import InvalidInput
from service.ids import id_order, validate_stream_id
from service.models import ms_to_datetime

MAX_PAGE = 1_000
START = "0-0"
ENDING_TYPES = frozenset({"session.deleted", "session.expired"})


class LifecycleEvent(BaseModel):
    id: str
    type: str
    session_id: str
    at: datetime


def entry_to_event(entry_id: str, fields: dict[str, str]) -> LifecycleEvent:
    at = fields.get("at", "")
    ms = int(at) if at.isdigit() else id_order(entry_id)[0]
    return LifecycleEvent(
        id=entry_id,
        type=fields.get("type", ""),
        session_id=fields.get("session_id", ""),
        at=ms_to_datetime(ms),
    )


class LifecycleReader:
    """Reads one tenant's lifecycle stream."""

    def __init__(self, redis: RedisClient, prefix: str, tenant_id: str) -> None:
        self._redis: Any = cast(Any, redis)
        self.key = K.lifecycle_key(prefix, tenant_id)

    async def read(self, after: str = START, limit: int = 100) -> list[LifecycleEvent]:
        """Entries after ``after`` (exclusive), oldest first."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE} (got {limit})")
        start = "(" + validate_stream_id(after)
        with store_errors("read the lifecycle stream"):
            rows = await self._redis.xrange(self.key, min=start, max="+", count=limit)
        return [entry_to_event(eid, fields) for eid, fields in rows]

    async def wait(
        self, after: str = START, *, timeout_ms: int, limit: int = 100
    ) -> list[LifecycleEvent]:
        """Entries after ``after``, waiting up to ``timeout_ms`` for the first (XREAD BLOCK).
        [] on timeout. Keep ``timeout_ms`` under the client's socket timeout."""
        validate_stream_id(after)
        with store_errors("follow the lifecycle stream"):
            reply = await self._redis.xread(
                {self.key: after}, count=limit, block=max(timeout_ms, 1)
            )
        if not reply:
            return []
        rows = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return [entry_to_event(eid, fields) for eid, fields in rows]

    async def last_id(self) -> str:
        """The id of the newest entry ("0-0" when the stream is empty): where "from now on"
        starts, without the gaps of XREAD ``$``."""
        with store_errors("read the lifecycle stream"):
            rows = await self._redis.xrevrange(self.key, max="+", min="-", count=1)
        return str(rows[0][0]) if rows else START
