"""Redis must never evict session keys: the service checks ``maxmemory-policy``.

With any policy but ``noeviction``, Redis under memory pressure deletes single keys of live
sessions (a pending-turn list, a metadata hash, a history), and a prompt whose turn list was
evicted is never answered, silently. Managed Redis often defaults to ``volatile-lru`` or
``allkeys-lru``, and every session key of ours has a TTL, so ``volatile-*`` policies hit them too.
The API and the workers read the policy at start (from ``INFO memory``, which needs no ``CONFIG``
permission; on a Cluster from every node) and log an error when it is unsafe; the API's
``/readyz`` then fails too, unless the operator accepts eviction with
``SESSIONS_ALLOW_EVICTION=true``. With ``noeviction``, a full Redis refuses writes (HTTP 507)
and loses nothing.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from service.connections import store_errors
from service.errors import StoreUnavailable
from service.logging import get_logger

log = get_logger("service.eviction")
SAFE_POLICY = "noeviction"


async def eviction_policies(redis: Any) -> set[str]:
    """The ``maxmemory_policy`` of the data Redis (of every node, on a Cluster); empty when the
    server will not tell (``INFO`` refused by an ACL, or a server without it)."""
    try:
        with store_errors("read the eviction policy"):
            info = await redis.info("memory")
    except ResponseError as exc:
        log.warning("redis.eviction_policy_unknown", error=str(exc))
        return set()
    if "maxmemory_policy" in info:
        return {str(info["maxmemory_policy"])}
    return {str(node["maxmemory_policy"]) for node in info.values() if isinstance(node, dict)}


class EvictionCheck:
    """The outcome of the last check, for readiness and metrics."""

    def __init__(self, allow_eviction: bool) -> None:
        self.allow_eviction = allow_eviction
        self.unsafe: set[str] = set()

    @property
    def ready(self) -> bool:
        return self.allow_eviction or not self.unsafe

    async def run(self, redis: Any, *, process: str) -> bool:
        """Read the policy; log an error when it is unsafe. True when it is safe."""
        self.unsafe = {p for p in await eviction_policies(redis) if p != SAFE_POLICY}
        if self.unsafe:
            log.error(
                "redis.eviction_policy_unsafe",
                process=process,
                policies=sorted(self.unsafe),
                accepted=self.allow_eviction,
                fix="maxmemory-policy noeviction, or SESSIONS_ALLOW_EVICTION=true to accept it",
            )
        return not self.unsafe

    def refuse_unless_ready(self) -> None:
        if not self.ready:
            raise StoreUnavailable(
                f"Redis may evict session data (maxmemory-policy {', '.join(sorted(self.unsafe))});"
                " set it to noeviction, or SESSIONS_ALLOW_EVICTION=true to accept the risk"
            )
