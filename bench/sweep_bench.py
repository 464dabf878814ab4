"""Expiry sweep cost: 1,000 expired sessions among 100,000 live ones vs 1,000 among none.

Two tenants on one redis-server: ``large`` holds 100,000 live sessions, ``small`` none. Each round
creates 1,000 sessions with a 1 s TTL in both (real sessions, through ``TenantStore.create``),
waits until Redis has expired them, then times ``sweep_expired`` on each tenant (order
alternating). The live sessions are created once, also through ``TenantStore.create``, with the
default TTL. The target: the sweep costs the same whatever the number of live sessions (it reads
only the expiry-ordered index from its start up to now), so the ratio large/small stays near 1.

Run: ``.venv/bin/python -m bench.sweep_bench`` (starts its own redis-server).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from redis.asyncio import Redis

from bench.common import Result
from service.store import Store, TenantStore
from service.sweep import sweep_expired

LIVE = 100_000
EXPIRED = 1_000
ROUNDS = 3
CONCURRENCY = 256


async def _create(ts: TenantStore, ids: list[str], ttl: int | None) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(sid: str) -> None:
        async with gate:
            await ts.create(sid, model="m", ttl_seconds=ttl, max_sessions=0)

    for start in range(0, len(ids), 5_000):
        await asyncio.gather(*(one(sid) for sid in ids[start : start + 5_000]))


async def run(redis_url: str, *, live: int = LIVE, expired: int = EXPIRED) -> dict[str, Any]:
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=CONCURRENCY + 16)
    try:
        await redis.flushall()
        store = Store(redis, prefix="bench", default_ttl=24 * 3600)
        large, small = store.tenant("large"), store.tenant("small")
        t0 = time.perf_counter()
        await _create(large, [f"live-{i}" for i in range(live)], None)
        setup_s = time.perf_counter() - t0
        times: dict[str, list[float]] = {"large": [], "small": []}
        for r in range(ROUNDS):
            ids = [f"gone-{r}-{i}" for i in range(expired)]
            await asyncio.gather(_create(large, ids, 1), _create(small, ids, 1))
            await asyncio.sleep(1.2)
            order = ("large", "small") if r % 2 == 0 else ("small", "large")
            for name in order:
                start = time.perf_counter()
                report = await sweep_expired(store, [name])
                times[name].append(time.perf_counter() - start)
                assert report.total == expired, (name, report.to_json())
        assert await large.count_live() == live and await small.count_live() == 0
        large_s = statistics.median(times["large"])
        small_s = statistics.median(times["small"])
        return {
            "expired": expired,
            "live_large": live,
            "sweep_s_large": round(large_s, 4),
            "sweep_s_small": round(small_s, 4),
            "ratio_large_small": round(large_s / small_s, 3),
            "per_session_ms_large": round(large_s / expired * 1000, 4),
            "rounds": ROUNDS,
            "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "setup_s": round(setup_s, 1),
        }
    finally:
        await redis.aclose()


def as_results(figures: dict[str, Any]) -> list[Result]:
    """The figures as the bench runner's results."""
    return [
        Result(
            "sweep",
            f"sweep {figures['expired']:,} expired among {figures['live_large']:,} live",
            figures["sweep_s_large"],
            "s",
            figures["sweep_s_small"],
            f"{figures['expired']:,} expired among none",
            "ratio ~ 1 (cost independent of live sessions)",
            higher_is_better=False,
            notes=f"median of {figures['rounds']} rounds",
        )
    ]


async def main() -> None:  # pragma: no cover - manual runs
    from bench.common import private_redis

    with private_redis() as url:
        figures = await run(url)
    for key, value in figures.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
