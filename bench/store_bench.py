"""Store append and history read against raw redis-py doing the same work, in the same run.

Append: ``TenantStore.append`` (one EVALSHA: stream entry, metadata, TTL on every session key,
index) against a raw pipeline of the same commands (XADD, HSET, HINCRBY, five PEXPIREs, two
ZADDs) sent in one round trip without a transaction. Both run 32 concurrent writers on 32
sessions over one connection pool.

History read: ``TenantStore.read_events`` of a 1,000-event stream (events parsed into dicts)
against a raw ``XRANGE`` of the same stream (redis-py's reply, fields not even JSON-decoded), and
against a list-based store's read (``LRANGE`` + ``json.loads`` per item, the shape the OpenAI
Agents SDK's ``RedisSession`` uses).

Memory: ``MEMORY USAGE`` of every key of a session holding 1,000 messages, per message, against
the bar ``1.5 x JSON size of the content + 64 bytes``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.asyncio import Redis

from bench.common import Result
from service import keys as K
from service.models import NewEvent
from service.store import Store

WRITERS = 32
APPENDS_PER_WRITER = 100
HISTORY = 1000
CONTENT = "Let's plan a web app architecture with a Postgres database and a Redis cache. " * 2


def _message(i: int) -> NewEvent:
    return NewEvent(type="user.message", data={"content": f"{i} {CONTENT}"})


async def _ours_append(store: Store, round_no: int) -> int:
    tenant = store.tenant("bench")

    async def writer(w: int) -> None:
        sid = f"w{w}"
        for i in range(APPENDS_PER_WRITER):
            await tenant.append(sid, [_message(i)])

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    return WRITERS * APPENDS_PER_WRITER


async def _raw_append(redis: Redis, round_no: int) -> int:
    """The same writes as the append script, pipelined by hand (no atomicity, no checks)."""

    async def writer(w: int) -> None:
        sid = f"w{w}"
        keys = K.session_keys("raw", "bench", sid)
        idx = K.index_keys("raw", "bench", 0)
        live = K.live_key("raw", "bench", 0)
        for i in range(APPENDS_PER_WRITER):
            body = "u" + json.dumps({"content": f"{i} {CONTENT}"}, separators=(",", ":"))
            now = int(time.time() * 1000)
            pipe = redis.pipeline(transaction=False)
            pipe.rpush(keys.history, f"{now}{body}")
            pipe.xadd(live, {"s": sid, "h": f"{now}-{i}", "e": body}, maxlen=10_000)
            pipe.hset(keys.meta, mapping={"modified": now, "last_event_id": "0-0"})
            pipe.hincrby(keys.meta, "events", 1)
            for key in keys.all():
                pipe.pexpire(key, 3_600_000)
            pipe.zadd(idx.idx, {sid: now})
            pipe.zadd(idx.exp, {sid: now + 3_600_000})
            await pipe.execute()

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    return WRITERS * APPENDS_PER_WRITER


async def append_rates(store: Store, redis: Any, repeats: int) -> tuple[float, float]:
    """Best appends/s of the store and of the raw pipeline, rounds interleaved (the first round
    warms both up and is not counted)."""
    ours_rates, raw_rates = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        n = await _ours_append(store, r)
        t1 = time.perf_counter()
        m = await _raw_append(redis, r)
        t2 = time.perf_counter()
        if r:
            ours_rates.append(n / (t1 - t0))
            raw_rates.append(m / (t2 - t1))
    return max(ours_rates), max(raw_rates)


async def run(redis_url: str, repeats: int = 5) -> list[Result]:
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=64)
    await redis.flushall()
    store = Store(redis, prefix="bench", default_ttl=3600)
    tenant = store.tenant("bench")
    for w in range(WRITERS):
        await tenant.create(f"w{w}", model="m")
    ours_rate, raw_rate = await append_rates(store, redis, repeats)
    results = [
        Result(
            "store",
            "append (32 writers)",
            ours_rate,
            "appends/s",
            raw_rate,
            "raw redis-py pipeline, same commands",
            ">= 0.70",
        )
    ]
    results += await _history(redis, store, repeats)
    results.append(await _memory(redis, store))
    await redis.aclose()
    return results


async def _history(redis: Redis, store: Store, repeats: int) -> list[Result]:
    tenant = store.tenant("bench")
    await tenant.create("hist", model="m")
    for i in range(HISTORY):  # one append per event: ids (and timestamps) all differ
        await tenant.append("hist", [_message(i)])
    key = K.session_keys("bench", "bench", "hist").history
    list_key = "bench:list-peer"
    items = [json.dumps({"role": "user", "content": f"{i} {CONTENT}"}) for i in range(HISTORY)]
    await redis.delete(list_key)
    await redis.rpush(list_key, *items)

    async def ours() -> int:
        for _ in range(50):
            events = await tenant.read_events("hist", limit=HISTORY)
            assert len(events) == HISTORY
        return 50

    async def served() -> int:
        for _ in range(50):
            page = await tenant.read_events_json("hist", limit=HISTORY)
            assert page.startswith("[")
        return 50

    async def raw() -> int:
        for _ in range(50):
            rows = await redis.lrange(key, 0, HISTORY - 1)
            assert len(rows) == HISTORY
        return 50

    async def listed() -> int:
        for _ in range(50):
            got = [json.loads(x) for x in await redis.lrange(list_key, 0, HISTORY - 1)]
            assert len(got) == HISTORY
        return 50

    rates: dict[str, list[float]] = {"ours": [], "served": [], "raw": [], "list": []}
    for r in range(repeats + 1):
        for name, fn in (("ours", ours), ("served", served), ("raw", raw), ("list", listed)):
            t0 = time.perf_counter()
            n = await fn()
            if r:
                rates[name].append(n / (time.perf_counter() - t0))
    best = {k: max(v) for k, v in rates.items()}
    return [
        Result("store", "read 1,000-event history, decoded", best["ours"], "reads/s", best["raw"],
               "raw LRANGE of the history (not decoded)", ">= 0.70"),
        Result("store", "read 1,000-event history as served (JSON text)", best["served"],
               "reads/s", best["raw"], "raw LRANGE of the history (not decoded)", ">= 0.70"),
        Result("store", "read 1,000-event history, decoded", best["ours"], "reads/s", best["list"],
               "list store: LRANGE + json.loads each", ">= 1.00"),
    ]  # fmt: skip


async def _memory(redis: Redis, store: Store) -> Result:
    tenant = store.tenant("bench")
    await tenant.create("mem", model="m")
    content_json: list[int] = []
    for start in range(0, HISTORY, 100):
        batch = [_message(i) for i in range(start, start + 100)]
        content_json += [len(json.dumps(m.data["content"])) for m in batch]
        await tenant.append("mem", batch)
    used = 0
    for key in K.session_keys("bench", "bench", "mem").all():
        used += int(await redis.memory_usage(key, samples=0) or 0)
    per_message = used / HISTORY
    avg_json = sum(content_json) / len(content_json)
    bar = 1.5 * avg_json + 64
    return Result(
        "store",
        "Redis memory per message",
        per_message,
        "bytes",
        bar,
        f"bar: 1.5 x content JSON ({avg_json:.0f} B) + 64",
        "<= bar",
        higher_is_better=False,
        extra={"content_json_bytes": avg_json},
    )


async def main(argv: Any = None) -> None:  # pragma: no cover - manual runs
    from bench.common import private_redis

    with private_redis() as url:
        for res in await run(url):
            print(res)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
