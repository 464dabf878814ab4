"""The registry of sessions with pending turns: what the watchdog walks to find stranded turns.

One sorted set per tenant (``keys.pending_key``): session id -> the server time (ms) it was last
registered. A session is registered in the same script that appends its turn on a single Redis,
and just before that script on a Cluster (the registry lives in another slot there). It leaves
the registry when its last pending turn is answered or aborted, or the session is deleted or
swept (in the script, on a single Redis), or when the watchdog finds it without pending turns
(``prune``, on either). An entry therefore never hides a pending turn; at worst it outlives one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service import keys as K
from service.connections import store_errors


@dataclass(frozen=True, slots=True)
class Registered:
    session_id: str
    score: int  # server ms of the last registration (or rescue)


class PendingRegistry:
    """One tenant's registry."""

    def __init__(self, redis: Any, scripts: dict[str, Any], prefix: str, tenant_id: str) -> None:
        self._redis = redis
        self._settle = scripts["pending_settle"]
        self.key = K.pending_key(prefix, tenant_id)

    async def older_than(self, max_score_ms: int, limit: int) -> list[Registered]:
        """Entries registered at or before ``max_score_ms``, oldest first, at most ``limit``."""
        with store_errors("read the pending-turn registry"):
            rows = await self._redis.zrangebyscore(
                self.key, "-inf", max_score_ms, 0, limit, withscores=True, score_cast_func=int
            )
        return [Registered(member, score) for member, score in rows]

    async def size(self) -> int:
        with store_errors("read the pending-turn registry"):
            return int(await self._redis.zcard(self.key))

    async def prune(self, entry: Registered) -> bool:
        """Remove ``entry`` unless the session was registered again since it was read."""
        with store_errors("prune the pending-turn registry"):
            done = await self._settle(
                keys=[self.key], args=[entry.session_id, entry.score, "prune"]
            )
        return bool(done)

    async def undo(self, entry: Registered, before: int) -> bool:
        """Take back a registration that queued no turn (the send was refused or a duplicate):
        the entry's score before it (``before``; 0: it was not registered), unless the session
        was registered again since. A refused send thus never delays the watchdog's look."""
        with store_errors("update the pending-turn registry"):
            done = await self._settle(
                keys=[self.key], args=[entry.session_id, entry.score, "undo", before]
            )
        return bool(done)

    async def bump(self, session_id: str, at_ms: int = 0) -> None:
        """Move a still registered entry's time to ``at_ms`` (0: now). Now marks a rescue just
        dispatched, so the next rescue of the same session waits as long as a fresh turn would;
        a later time keeps a session being answered out of the passes until its lease could
        have expired."""
        with store_errors("update the pending-turn registry"):
            await self._settle(keys=[self.key], args=[session_id, max(at_ms, 0), "bump"])
