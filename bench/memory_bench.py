"""Redis memory of one session: empty, and holding 10 messages; and the index's share.

``MEMORY USAGE <key> SAMPLES 0`` (every element counted) summed over every key of the session
(metadata hash, event stream, and the bookmark, idempotency and pending-turn structures when they
exist), for sessions created through ``TenantStore.create`` with the default settings and
written one message per call, user and assistant in turn (160-byte messages, as in the store
benchmark).

Baseline: the same 10 messages in the layout the OpenAI Agents SDK's ``RedisSession`` writes (a
metadata hash of ``session_id``, ``created_at``, ``updated_at`` and a list of JSON items), built
here with the commands it sends. Two measures: ``MEMORY USAGE`` of the session's own keys,
and the growth of ``INFO memory`` ``used_memory`` over many such sessions divided by their
number (everything a session costs: key names, expiry entries, index and lifecycle entries;
the key tables are grown beforehand, so no doubling of them lands in a measurement).
The per-tenant index (two sorted sets, by modification time and by expiry) is shared by the
tenant's sessions: its share is measured over the empty sessions of one tenant.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis

from bench.common import Result
from bench.store_bench import CONTENT
from service import keys as K
from service.models import NewEvent
from service.store import Store, TenantStore

PREFIX = "mem"
TENANT = "bench"
MESSAGES = 10
INDEXED = 1000
ROLES = ("user", "assistant")


async def _usage(redis: Redis, keys: list[str]) -> int:
    total = 0
    for key in keys:
        total += int(await redis.memory_usage(key, samples=0) or 0)
    return total


async def _session_bytes(redis: Redis, session_id: str) -> int:
    return await _usage(redis, K.session_keys(PREFIX, TENANT, session_id).all())


def _content(i: int) -> str:
    return f"{i} {CONTENT}"


async def _write(tenant: TenantStore, session_id: str, messages: int) -> None:
    await tenant.create(session_id, model="gpt-4o")
    for i in range(messages):
        role = ROLES[i % 2]
        await tenant.append(
            session_id, [NewEvent(type=f"{role}.message", data={"content": _content(i)})]
        )


async def _list_layout(redis: Redis, session_id: str, messages: int) -> int:
    """The peer layout, written with the commands ``RedisSession.add_items`` sends."""
    meta, items = f"peer:{session_id}", f"peer:{session_id}:messages"
    for i in range(messages):
        item = json.dumps({"role": ROLES[i % 2], "content": _content(i)}, separators=(",", ":"))
        pipe = redis.pipeline(transaction=True)
        pipe.hset(meta, "session_id", session_id)
        pipe.hsetnx(meta, "created_at", "1732246089")
        pipe.rpush(items, item)
        pipe.hset(meta, "updated_at", "1732246090")
        pipe.expire(meta, 3600)
        pipe.expire(items, 3600)
        await pipe.execute()
    return await _usage(redis, [meta, items])


async def _used_memory(redis: Redis) -> int:
    """``used_memory`` less the clients' buffers (which come and go with the connections)."""
    info = await redis.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


async def _presize_keyspace(redis: Redis, keys: int) -> None:
    """Grow Redis's key and expiry tables now, to a size that holds ``keys`` more keys: their
    doubling (a lump of memory at each power of two) would otherwise land on whichever
    measurement crosses it."""
    size = 1
    while size <= 2 * keys + 2:
        size *= 2
    fill = size // 2 + 1
    for start in range(0, fill, 1000):
        pipe = redis.pipeline(transaction=False)
        for i in range(start, min(fill, start + 1000)):
            pipe.set(f"fill:{i}", "x", ex=3600)
        await pipe.execute()
    await asyncio.sleep(1.0)  # let incremental rehashing finish and free the old tables


async def _many(n: int, fn: Any) -> None:
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def run(redis_url: str, *, sessions: int = 2000) -> list[Result]:
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=80)
    try:
        await redis.flushall()
        store = Store(redis, prefix=PREFIX, max_sessions=10**7)
        tenant = store.tenant(TENANT)
        await _write(tenant, "empty", 0)
        await _write(tenant, "ten", MESSAGES)
        keys = K.session_keys(PREFIX, TENANT, "empty")
        meta, stream = await _usage(redis, [keys.meta]), await _usage(redis, [keys.history])
        empty = await _session_bytes(redis, "empty")
        ten = await _session_bytes(redis, "ten")
        peer_ten = await _list_layout(redis, "ten", MESSAGES)
        content_json = sum(len(json.dumps(_content(i))) for i in range(MESSAGES)) / MESSAGES

        # used_memory per session: everything a session costs (keys, expiry and index entries)
        await _presize_keyspace(redis, 3 * 2 * sessions)
        per_session: dict[str, float] = {}
        for name, fn in (
            ("empty", lambda i: _write(store.tenant("e"), f"s{i:05d}", 0)),
            ("ten", lambda i: _write(store.tenant("t"), f"s{i:05d}", MESSAGES)),
            ("peer", lambda i: _list_layout(redis, f"s{i:05d}", MESSAGES)),
        ):
            await asyncio.sleep(0.5)  # idle clients give their buffers back
            before = await _used_memory(redis)
            await _many(sessions, fn)
            await asyncio.sleep(0.5)
            per_session[name] = (await _used_memory(redis) - before) / sessions

        indexed = "e"
        idx = K.index_keys(PREFIX, indexed, 0)
        index_share = await _usage(redis, [idx.idx, idx.exp]) / sessions
        lifecycle_share = await _usage(redis, [K.lifecycle_key(PREFIX, indexed)]) / sessions
    finally:
        await redis.aclose()

    layout = "list layout (RedisSession: hash + list of JSON items)"
    return [
        Result("memory", "empty session, MEMORY USAGE of its keys", empty, "bytes",
               notes=f"metadata hash {meta} B + history {stream} B (none until a message)"),
        Result("memory", f"empty session, used_memory / {sessions:,} sessions",
               per_session["empty"], "bytes",
               notes="keys, expiries, index, lifecycle entries; about 5 % run to run"),
        Result("memory", f"session with {MESSAGES} messages, MEMORY USAGE of its keys", ten,
               "bytes", peer_ten, layout, higher_is_better=False,
               notes=f"{MESSAGES} x {content_json:.0f}-byte content JSON, one append each"),
        Result("memory", f"session with {MESSAGES} messages, used_memory / {sessions:,} sessions",
               per_session["ten"], "bytes", per_session["peer"], layout,
               higher_is_better=False,
               notes="keys, expiries, index, lifecycle entries; varies by about 10 % run to run"),
        Result("memory", "index share per session", index_share, "bytes",
               notes=f"tenant index (by modified + by expiry) / {sessions:,} sessions; the "
                     f"lifecycle stream adds {lifecycle_share:.0f} B per session until its "
                     "cap of 10,000 events"),
    ]  # fmt: skip


async def main() -> None:  # pragma: no cover - manual runs
    from bench.common import private_redis

    with private_redis() as url:
        for res in await run(url):
            print(res)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
