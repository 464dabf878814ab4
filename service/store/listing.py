"""The tenant's session index: listing pages and live counts."""

from __future__ import annotations

import asyncio

from service import keys as K
from service.connections import store_errors
from service.errors import (
    InvalidInput,
)
from service.ids import validate_labels
from service.models import (
    SessionInfo,
    SessionPage,
    session_info_from_hash,
)
from service.paging import ShardPage, decode_cursor, encode_cursor, merge_shards
from service.store.base import LIST_FIELDS, LIST_PAGE_BYTES, LIST_SCAN_BUDGET, MAX_PAGE, TenantBase


class ListingOps(TenantBase):
    """``list_sessions`` and the live count, from the index shards."""

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None, labels: dict[str, str] | None = None
    ) -> SessionPage:
        """Sessions newest-modified first. Cost per page is independent of the tenant's size; a
        label filter reads at most a few index pages per call and may return a short page with
        a cursor to continue."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE} (got {limit})")
        want = validate_labels(labels) if labels else {}
        out: list[SessionInfo] = []
        size = 0
        last = ("", "")  # the (score, member) of the last item taken
        next_cursor = cursor
        listed: set[str] = set()
        for _ in range(5 if want else 1):
            entries, next_cursor = await self._index_page(limit - len(out), next_cursor)
            infos = await self._infos([m for _, m in entries])
            for (score, member), info in zip(entries, infos, strict=True):
                if member in listed:  # in two shards while ``reindex`` moves it
                    continue
                if info is None or any(info.labels.get(k) != v for k, v in want.items()):
                    continue
                if out and size + _listed_bytes(info) > LIST_PAGE_BYTES:
                    # Cut the page: continue strictly after the last item returned.
                    return SessionPage(data=out, next_cursor=encode_cursor(*last))
                out.append(info)
                listed.add(member)
                size += _listed_bytes(info)
                last = (score, member)
            if next_cursor is None or len(out) >= limit:
                break
        return SessionPage(data=out, next_cursor=next_cursor)

    async def _index_page(
        self, count: int, cursor: str | None
    ) -> tuple[list[tuple[str, str]], str | None]:
        """Up to ``count`` index entries ``(score, member)`` after ``cursor``, and the next one."""
        score, member = decode_cursor(cursor)
        calls = []
        for shard in range(self._s.index_shards):
            idx = K.index_keys(self._s.prefix, self.tenant_id, shard)
            calls.append(
                self._s.scripts["list_page"](
                    keys=[idx.idx, idx.exp], args=["", score, member, count, LIST_SCAN_BUDGET]
                )
            )
        with store_errors("list sessions"):
            results = await asyncio.gather(*calls)
        pages: list[ShardPage] = []
        for live, suspect, exhausted, last_m, last_s in results:
            entries = list(zip(live[1::2], live[0::2], strict=True))
            if self._s.cluster and suspect:
                entries += await self._confirm_alive(suspect)
            pages.append(ShardPage(entries, bool(exhausted), (str(last_s), str(last_m))))
        return merge_shards(pages, count)

    async def _confirm_alive(self, flat: list[str]) -> list[tuple[str, str]]:
        """Cluster mode: entries the index believes expired may have been refreshed by a write
        whose index update has not landed; the session's own keys are the truth."""
        pairs = list(zip(flat[1::2], flat[0::2], strict=True))
        with store_errors("list sessions"):
            alive = await asyncio.gather(*(self.exists(m) for _, m in pairs))
        return [p for p, ok in zip(pairs, alive, strict=True) if ok]

    async def _infos(self, ids: list[str]) -> list[SessionInfo | None]:
        """The listed fields of each session (None for one gone since it was indexed); the
        system message and other large fields are not read."""
        if not ids:
            return []
        with store_errors("read sessions"):
            pipe = self._s.redis.pipeline(transaction=False)  # one round trip (per node)
            for i in ids:
                pipe.hmget(self._session_keys(i).meta, LIST_FIELDS)
            rows = await pipe.execute()
        out: list[SessionInfo | None] = []
        for row in rows:
            raw = {k: v for k, v in zip(LIST_FIELDS, row, strict=True) if v is not None}
            out.append(session_info_from_hash(raw) if "id" in raw else None)
        return out

    async def count_live(self) -> int:
        """Live sessions of the tenant: index size minus entries past their deadline (by the
        server's clock)."""
        return sum(card - expired for card, _, expired in await self._index_counts(None))

    async def _index_counts(self, now_ms: int | None) -> list[tuple[int, int, int]]:
        """Per shard: (index entries, expiry entries, expiry entries at or before ``now_ms``,
        else the server's ``TIME``)."""
        script = self._s.scripts["count_live"]
        now = "" if now_ms is None else now_ms
        with store_errors("count sessions"):
            replies = await asyncio.gather(
                *(
                    script(keys=[idx.idx, idx.exp], args=[now])
                    for idx in (
                        K.index_keys(self._s.prefix, self.tenant_id, shard)
                        for shard in range(self._s.index_shards)
                    )
                )
            )
        return [(int(a), int(b), int(c)) for a, b, c in replies]


def _listed_bytes(info: SessionInfo) -> int:
    """About what a session adds to a list page: its free text plus a fixed part."""
    labels = sum(len(k) + len(v.encode()) for k, v in info.labels.items())
    return 512 + len(info.summary.encode()) + len(info.name.encode()) + labels
