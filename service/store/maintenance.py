"""What cleanup, the expiry sweep and stats read and change."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from service import keys as K
from service.connections import store_errors
from service.models import stored_labels
from service.retention import SessionFacts
from service.store.listing import ListingOps


class MaintenanceOps(ListingOps):
    """Index walks, facts for retention, the sweeper's step, counts and memory estimates."""

    async def index_oldest(
        self,
        count: int,
        *,
        after: tuple[int, str] | None = None,
        max_modified_ms: int | None = None,
    ) -> list[tuple[str, int]]:
        """Index entries least recently modified first, as ``(session_id, modified_ms)``: at most
        ``count``, strictly after the cursor ``after`` = ``(modified_ms, session_id)``, modified
        at or before ``max_modified_ms``. Each shard reads O(log N + count) entries, so walking
        the index costs what it returns, and a session written meanwhile moves past the walk."""
        return await self._walk("idx", count, after, max_modified_ms)

    async def expired_after(
        self, now_ms: int, count: int, *, after: tuple[int, str] | None = None
    ) -> list[tuple[str, int]]:
        """Expiry-index entries whose deadline is at or before ``now_ms``, earliest first, as
        ``(session_id, deadline_ms)``, strictly after the cursor ``after`` = ``(deadline_ms,
        session_id)``, so entries a sweep leaves in place (live sessions) do not hold back the
        ones behind them."""
        return await self._walk("exp", count, after, now_ms)

    async def _walk(
        self, kind: str, count: int, after: tuple[int, str] | None, max_score: int | None
    ) -> list[tuple[str, int]]:
        if count < 1:
            return []
        low = "-inf" if after is None else after[0]
        high = "+inf" if max_score is None else max_score

        async def shard_run(shard: int) -> list[tuple[int, str]]:
            idx = K.index_keys(self._s.prefix, self.tenant_id, shard)
            key = idx.idx if kind == "idx" else idx.exp
            out: list[tuple[int, str]] = []
            offset = 0
            while len(out) < count:
                rows = await self._s.redis.zrangebyscore(
                    key, low, high, offset, count, withscores=True, score_cast_func=int
                )
                for member, score in rows:
                    if after is None or (score, member) > after:
                        out.append((score, member))
                if len(rows) < count:
                    break
                offset += len(rows)
            return out[:count]

        with store_errors("walk the session index"):
            runs = await asyncio.gather(*(shard_run(i) for i in range(self._s.index_shards)))
        merged = sorted(entry for run in runs for entry in run)[:count]
        return [(member, score) for score, member in merged]

    async def session_facts(self, ids: Sequence[str]) -> list[SessionFacts]:
        """What cleanup decides on, for each id that still exists (one pipelined read)."""
        if not ids:
            return []
        fields = ("created", "modified", "infinite", "labels", "events")
        with store_errors("read sessions"):
            pipe = self._s.redis.pipeline(transaction=False)
            for sid in ids:
                pipe.hmget(self._session_keys(sid).meta, fields)
            rows = await pipe.execute()
        out: list[SessionFacts] = []
        for sid, (created, modified, infinite, labels, events) in zip(ids, rows, strict=True):
            if created is None:
                continue  # expired or deleted since it was listed
            out.append(
                SessionFacts(
                    session_id=sid,
                    created_ms=int(created),
                    modified_ms=int(modified or created),
                    infinite=infinite == "1",
                    labels=stored_labels(labels),
                    events=int(events or 0),
                )
            )
        return out

    async def count_finite_live(self, now_ms: int | None = None) -> int:
        """Live sessions that have a TTL (the expiry index minus entries past their deadline,
        ``now_ms`` or else the server's clock); ``count_live() - count_finite_live()`` is the
        number of infinite sessions."""
        return sum(exp - expired for _, exp, expired in await self._index_counts(now_ms))

    async def sweep_session(self, session_id: str) -> str:
        """Sweeper step for an index entry past its deadline. Returns ``"swept"`` when this call
        removed the session's leftovers and index entries and emitted its one ``session.expired``
        event; ``"alive"`` when the session exists (nothing changed); ``"gone"`` when another
        sweep or a delete got there first. Safe to run from overlapping sweeps."""
        res = int(await self._run("sweep_session", session_id, [], "sweep a session"))
        if res == -1:
            return "alive"
        if res == 1:
            return "swept"
        if not self._s.cluster:
            return "gone"
        await self._seat("release", session_id, min_age_ms=self._s.seat_grace_ms)
        idx = self._index_keys(session_id)
        with store_errors("sweep a session"):
            removed = await self._s.scripts["sweep_index"](
                keys=[idx.idx, idx.exp], args=[session_id]
            )
            if not int(removed):
                return "gone"
            await self._lifecycle("session.expired", session_id, await self._server_ms())
        return "swept"

    async def sample_ids(self, n: int) -> list[str]:
        """Up to ``n`` random indexed session ids (for estimates)."""
        per_shard = max(1, -(-n // self._s.index_shards))
        out: list[str] = []
        with store_errors("sample sessions"):
            for shard in range(self._s.index_shards):
                idx = K.index_keys(self._s.prefix, self.tenant_id, shard).idx
                out += await self._s.redis.zrandmember(idx, per_shard) or []
        return out[:n]

    async def memory_usage(self, ids: Sequence[str]) -> tuple[int, int]:
        """``(sessions found, bytes)``: ``MEMORY USAGE`` summed over every key of these sessions
        (Redis samples large structures, so this is itself an estimate)."""
        if not ids:
            return 0, 0
        with store_errors("measure memory"):
            pipe = self._s.redis.pipeline(transaction=False)
            for sid in ids:
                for key in self._session_keys(sid).all():
                    pipe.memory_usage(key)
            sizes = await pipe.execute()
        kinds = len(K.SESSION_KEY_KINDS)
        found = sum(1 for i in range(0, len(sizes), kinds) if sizes[i] is not None)
        return found, sum(int(s or 0) for s in sizes)

    async def shared_memory_usage(self) -> int:
        """``MEMORY USAGE`` of the tenant's index shards and lifecycle stream."""
        keys = [K.lifecycle_key(self._s.prefix, self.tenant_id)]
        for shard in range(self._s.index_shards):
            idx = K.index_keys(self._s.prefix, self.tenant_id, shard)
            keys += [idx.idx, idx.exp]
        with store_errors("measure memory"):
            pipe = self._s.redis.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key)
            sizes = await pipe.execute()
        return sum(int(s or 0) for s in sizes)
