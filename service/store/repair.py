"""Index convergence: seats on a Cluster, the repair pass, and moving entries between shards.

On a Cluster the index and the seats live in other slots than the sessions, so their updates
follow the session scripts and can land late or not at all. ``repair_index`` walks the index and
removes entries whose session is gone (announcing ``session.expired`` for each one no delete
explains), and gives every live session its seat; ``reclaim_seats`` frees the seats of sessions
that are gone. ``reindex`` moves entries to the shard the current ``index_shards`` gives them,
after the number of shards changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from service import keys as K
from service.connections import store_errors
from service.store.maintenance import MaintenanceOps

REPAIR_PAGE = 500
RECLAIM_INTERVAL_S = 1.0  # a tenant at its limit re-checks its seats at most this often


@dataclass
class RepairCounts:
    checked: int = 0
    removed: int = 0  # entries of sessions gone
    expired: int = 0  # of those, announced as expired here
    seated: int = 0  # live sessions given the seat they lacked
    moved: int = 0  # entries moved to their shard (reindex)
    cursor: tuple[int, str] | None = None  # where a walk with a budget stopped


class RepairOps(MaintenanceOps):
    """``reclaim_seats``, ``repair_index`` and ``reindex``."""

    _reclaimed_at: float = 0.0
    _reclaiming: asyncio.Lock | None = None

    async def reclaim_seats(self) -> int:
        """Cluster mode: release the seats of sessions that no longer exist (expired, not swept
        yet). Concurrent callers share one pass, and a tenant runs at most one per
        ``RECLAIM_INTERVAL_S`` in this process (a tenant at its limit cannot make every refused
        create walk its seats); returns the number of seats released."""
        if not self._s.cluster:
            return 0
        if self._reclaiming is None:
            self._reclaiming = asyncio.Lock()
        async with self._reclaiming:
            if time.monotonic() - self._reclaimed_at < RECLAIM_INTERVAL_S:
                return 0
            released = await self._reclaim()
            self._reclaimed_at = time.monotonic()
            return released

    async def _reclaim(self) -> int:
        seats = K.seats_key(self._s.prefix, self.tenant_id)
        before = await self._seat_count(seats)
        high = await self._server_ms() - self._s.seat_grace_ms
        offset = 0
        while True:
            with store_errors("count the tenant's sessions"):
                ids = await self._s.redis.zrangebyscore(seats, "-inf", high, offset, REPAIR_PAGE)
            alive = await self._alive(ids)
            for sid, ok in zip(ids, alive, strict=True):
                if not ok:
                    await self.sweep_session(sid)  # announces it, releases its seat
            if len(ids) < REPAIR_PAGE:
                break
            offset += sum(alive)  # released seats no longer take a place in the order
        return before - await self._seat_count(seats)

    async def repair_index(
        self,
        progress: Callable[[RepairCounts], None] | None = None,
        *,
        after: tuple[int, str] | None = None,
        budget: int | None = None,
    ) -> RepairCounts:
        """Walk the index (oldest first, from the cursor ``after``): remove entries whose session
        is gone and announce the expiry of each that was not deleted; on a Cluster, seat every
        live session. With ``budget``, stops after about that many entries and leaves the cursor
        to continue from in ``counts.cursor`` (None once the walk reached the end). On a single
        Redis the index is written with the session and nothing is found."""
        counts = RepairCounts()
        while budget is None or counts.checked < budget:
            page = await self.index_oldest(REPAIR_PAGE, after=after)
            if not page:
                after = None
                break
            after = (page[-1][1], page[-1][0])
            alive = await self._alive([sid for sid, _ in page])
            counts.checked += len(page)
            for (sid, modified), ok in zip(page, alive, strict=True):
                if not ok:
                    await self._prune(sid, modified, counts)
            if self._s.cluster:
                await self._seat_all(
                    [sid for (sid, _), ok in zip(page, alive, strict=True) if ok], counts
                )
            if progress is not None:
                progress(counts)
        counts.cursor = after
        return counts

    async def _prune(self, sid: str, modified: int, counts: RepairCounts) -> None:
        if not self._s.cluster:
            if await self.sweep_session(sid) == "swept":
                counts.removed += 1
                counts.expired += 1
            return
        idx = self._index_keys(sid)
        with store_errors("repair the session index"):
            res = int(
                await self._s.scripts["prune_index"](
                    keys=[idx.idx, idx.exp, idx.gone], args=[sid, modified]
                )
            )
        if res == 0:
            return
        counts.removed += 1
        await self._seat("release", sid, min_age_ms=self._s.seat_grace_ms)
        if res == 1:
            counts.expired += 1
            with store_errors("repair the session index"):
                await self._lifecycle("session.expired", sid, await self._server_ms())

    async def _seat_all(self, ids: list[str], counts: RepairCounts) -> None:
        if not ids:
            return
        seats = K.seats_key(self._s.prefix, self.tenant_id)
        now = await self._server_ms()
        with store_errors("count the tenant's sessions"):
            counts.seated += int(await self._s.redis.zadd(seats, dict.fromkeys(ids, now), nx=True))

    async def reindex(
        self,
        from_shards: int,
        *,
        dry_run: bool = False,
        progress: Callable[[RepairCounts], None] | None = None,
    ) -> RepairCounts:
        """Move every entry of the ``from_shards`` layout that is not in the shard the current
        ``index_shards`` gives it. A move adds the entry to its shard as an index touch of the
        time it was written (a newer write or a delete wins), then removes the old entry unless
        the session was written meanwhile. Safe while the service runs; with ``dry_run`` only
        counts."""
        counts = RepairCounts()
        moved: set[str] = set()
        for shard in range(max(from_shards, self._s.index_shards)):
            src = K.index_keys(self._s.prefix, self.tenant_id, shard)
            with store_errors("read the session index"):
                entries = [
                    (str(m), int(s))
                    async for m, s in self._s.redis.zscan_iter(src.idx, count=REPAIR_PAGE)
                ]
            for sid, modified in entries:
                if sid in moved:
                    continue  # moved here by this run
                counts.checked += 1
                if K.index_shard(sid, self._s.index_shards) == shard:
                    continue
                counts.moved += 1
                moved.add(sid)
                if not dry_run:
                    await self._move(sid, modified, src)
                if progress is not None and counts.moved % REPAIR_PAGE == 0:
                    progress(counts)
        if progress is not None:
            progress(counts)
        return counts

    async def _move(self, sid: str, modified: int, src: K.IndexKeys) -> None:
        dst = self._index_keys(sid)
        with store_errors("move an index entry"):
            deadline = await self._s.redis.zscore(src.exp, sid)
            dl = -1 if deadline is None else int(deadline)
            await self._s.scripts["touch_index"](
                keys=[dst.idx, dst.exp, dst.gone], args=[sid, modified, dl, "touch", 0]
            )
            await self._s.scripts["prune_index"](
                keys=[src.idx, src.exp, src.gone], args=[sid, modified]
            )
            if not await self.exists(sid):  # deleted meanwhile: its entries go
                await self._s.scripts["prune_index"](
                    keys=[dst.idx, dst.exp, dst.gone], args=[sid, modified]
                )

    async def _alive(self, ids: list[str]) -> list[bool]:
        if not ids:
            return []
        with store_errors("read sessions"):
            pipe = self._s.redis.pipeline(transaction=False)
            for sid in ids:
                pipe.exists(self._session_keys(sid).meta)
            return [bool(n) for n in await pipe.execute()]

    async def _seat_count(self, seats: str) -> int:
        with store_errors("count the tenant's sessions"):
            return int(await self._s.redis.zcard(seats))
