"""List paging cost at 1k, 10k and 100k sessions per tenant: it should stay flat.

Sessions are created through the store (real metadata, index and expiry entries). Each size
reports the latency of the first page of 50 and of a page deep in the listing (cursor taken
halfway), as a ratio to the 1k tenant.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from bench.common import Result, median
from service.store import Store

SIZES = (1_000, 10_000, 100_000)
PAGE = 50


async def _fill(store: Store, tenant: str, n: int) -> None:
    t = store.tenant(tenant)
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            await t.create(f"s{i:06d}", model="m", labels={"n": str(i % 10)})

    await asyncio.gather(*(one(i) for i in range(n)))


async def _page_ms(store: Store, tenant: str, cursor: str | None, repeats: int = 200) -> float:
    t = store.tenant(tenant)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        page = await t.list_sessions(limit=PAGE, cursor=cursor)
        samples.append((time.perf_counter() - start) * 1000)
        assert len(page.data) == PAGE
    return median(samples)


async def run(redis_url: str, shards: int = 1, sizes: tuple[int, ...] = SIZES) -> list[Result]:
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=128)
    await redis.flushall()
    store = Store(redis, prefix="lb", index_shards=shards, max_sessions=10**7)
    figures: dict[int, tuple[float, float]] = {}
    for n in sizes:
        tenant = f"t{n}"
        await _fill(store, tenant, n)
        middle = None
        t = store.tenant(tenant)
        cursor = None
        for _ in range(n // (2 * PAGE)):  # walk to the middle once to get a deep cursor
            page = await t.list_sessions(limit=PAGE, cursor=cursor)
            cursor = page.next_cursor
        middle = cursor
        figures[n] = (await _page_ms(store, tenant, None), await _page_ms(store, tenant, middle))
    await redis.aclose()
    base_first, base_deep = figures[sizes[0]]
    out = []
    for n in sizes:
        first, deep = figures[n]
        out.append(
            Result(
                "list",
                f"first page of 50, {n:,} sessions",
                first,
                "ms",
                base_first,
                f"same at {sizes[0]:,} sessions",
                "~1.0 (flat)",
                higher_is_better=False,
            )
        )
        out.append(
            Result(
                "list",
                f"middle page of 50, {n:,} sessions",
                deep,
                "ms",
                base_deep,
                f"same at {sizes[0]:,} sessions",
                "~1.0 (flat)",
                higher_is_better=False,
            )
        )
    return out
