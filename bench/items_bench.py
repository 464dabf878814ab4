"""Storage-only sessions through the Agents SDK adapter and HTTP, against the SDK's own
``RedisSession`` on the same Redis, same run.

Ours: ``service.client.agents.ServiceSession`` over a ``SessionClient`` to one ``sessionctl
serve`` process (a subprocess, default settings) on the benchmark's Redis. Peer: the OpenAI
Agents SDK's ``RedisSession`` in its own virtualenv, driven by ``bench/peer_driver.py`` (see
``bench.peer_bench``). Items are the peer benchmark's: 160-byte messages, user and assistant in
turn. Rounds alternate the sides.

- add_items, 32 writers on 8 sessions (4 per session), one item per call, each writer its own
  session object. Ours crosses HTTP, then one script per append; the peer's transactions are
  retried on WATCH conflicts.
- get_items() of a 1,000-item session (all of it).
- the conversation read as served over HTTP: ``Session.get_messages()`` of a session of 1,000
  messages (the peer benchmark's, stored by the store as the worker and sends store them), one
  ``GET /messages`` page, against the peer's ``get_items()`` of its 1,000 messages.
- memory per item: ``MEMORY USAGE ... SAMPLES 0`` of every key of a 1,000-item session, over
  1,000 (ours: metadata, history, idempotency keys; the tenant's live window is shared, trimmed
  to minutes, and reported apart).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis
from redis_sessions_client import SessionClient
from redis_sessions_client.agents import ServiceSession

from bench.api_bench import PREFIX, api_command, api_env, server, wait_ready
from bench.common import Result
from bench.peer_bench import HISTORY, Peer, _event, peer_python
from bench.store_bench import CONTENT
from service import keys as K
from service.embedded import free_port
from service.store import Store
from service.tenants import TenantRegistry

TENANT = "bench"
READS = 20
PEER_PREFIX = "peer:session"


def _item(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {CONTENT}"}


async def _ours_append(client: SessionClient, sessions: int, writers: int, n: int) -> int:
    async def writer(sid: str) -> None:
        session = ServiceSession(sid, client)
        for i in range(n):
            await session.add_items([_item(i)])

    await asyncio.gather(*(writer(f"w{s}") for s in range(sessions) for _ in range(writers)))
    return sessions * writers * n


async def _memory(redis: Redis, keys: list[str]) -> int:
    total = 0
    for key in keys:
        total += int(await redis.memory_usage(key, samples=0) or 0)
    return total


async def run(redis_url: str, *, rounds: int = 3, per_writer: int = 30) -> list[Result]:
    python = await asyncio.to_thread(peer_python)
    redis = Redis.from_url(redis_url, decode_responses=True)
    peer = await Peer.start(python, redis_url)
    port = free_port()
    try:
        await redis.flushall()
        _, api_key = await TenantRegistry(redis, PREFIX).create(TENANT)
        store = Store(redis, prefix=PREFIX, default_ttl=3600).tenant(TENANT)
        await store.create("conversation", model="m")
        for i in range(HISTORY):  # one append per message, as the peer benchmark's
            await store.append("conversation", [_event(i)])
        versions = await peer.call(op="hello")
        with server("API", api_command(port), api_env(redis_url), port) as srv:
            await wait_ready(srv)
            async with SessionClient(f"http://127.0.0.1:{port}", api_key=api_key) as client:
                hist = ServiceSession("hist", client)
                items = [_item(i) for i in range(HISTORY)]
                for start in range(0, HISTORY, 100):  # as the peer fills its session
                    await hist.add_items(items[start : start + 100])
                filled = await peer.call(op="fill", session="hist", items=HISTORY)
                assert filled["n"] == HISTORY, filled
                assert len(await hist.get_items()) == HISTORY
                conversation = await client.resume_session("conversation")
                assert len(await conversation.get_messages()) == HISTORY

                rates: dict[str, dict[str, list[float]]] = {
                    k: {"ours": [], "peer": []} for k in ("append", "read", "messages")
                }
                for r in range(rounds + 1):  # round 0 warms both up
                    for side in ("ours", "peer") if r % 2 else ("peer", "ours"):
                        if side == "ours":
                            t0 = time.perf_counter()
                            done = await _ours_append(client, 8, 4, per_writer)
                            append = done / (time.perf_counter() - t0)
                            t0 = time.perf_counter()
                            for _ in range(READS):
                                assert len(await hist.get_items()) == HISTORY
                            read = READS / (time.perf_counter() - t0)
                            t0 = time.perf_counter()
                            for _ in range(READS):
                                assert len(await conversation.get_messages()) == HISTORY
                            messages = READS / (time.perf_counter() - t0)
                        else:
                            got = await peer.call(
                                op="append", sessions=8, writers=4, per_writer=per_writer
                            )
                            append = got["n"] / got["seconds"]
                            got = await peer.call(op="read", session="hist", iterations=READS)
                            assert got["items"] == HISTORY, got
                            read = messages = got["n"] / got["seconds"]
                        if r:
                            rates["append"][side].append(append)
                            rates["read"][side].append(read)
                            rates["messages"][side].append(messages)
        ours_keys = K.session_keys(PREFIX, TENANT, "hist").all()
        ours_mem = await _memory(redis, [k for k in ours_keys if await redis.exists(k)])
        peer_keys = [k async for k in redis.scan_iter(match=f"{PEER_PREFIX}:hist*")]
        peer_mem = await _memory(redis, peer_keys)
        live = await _memory(redis, [k async for k in redis.scan_iter(match=f"{PREFIX}:*live*")])
    finally:
        await peer.close()
        await redis.aclose()

    peer_name = f"openai-agents {versions['openai-agents']} RedisSession"
    best = {k: {side: max(v) for side, v in sides.items()} for k, sides in rates.items()}
    return [
        Result("items", "add_items, 32 writers on 8 sessions", best["append"]["ours"],
               "items/s", best["append"]["peer"], peer_name, ">= 1.00",
               notes=f"ours: ServiceSession over HTTP (one serve process); {per_writer} "
                     f"appends per writer, best of {rounds}"),
        Result("items", "get_items() of a 1,000-item session", best["read"]["ours"],
               "reads/s", best["read"]["peer"], peer_name, ">= 1.00",
               notes="ours: ServiceSession.get_items() over HTTP; peer: get_items()"),
        Result("items", "1,000-message conversation read over HTTP", best["messages"]["ours"],
               "reads/s", best["messages"]["peer"], peer_name, ">= 1.00",
               notes="ours: Session.get_messages() (one GET /messages page, messages built); "
                     "peer: get_items() of the same 1,000 messages"),
        Result("items", "memory per item (1,000-item session)", ours_mem / HISTORY,
               "bytes", peer_mem / HISTORY, peer_name, "<= 1.10", higher_is_better=False,
               notes=f"MEMORY USAGE SAMPLES 0 of the session's keys; the tenant's live window "
                     f"held {live} bytes at the end (shared, trimmed to minutes)"),
    ]  # fmt: skip


async def main() -> None:  # pragma: no cover - manual runs
    from bench.common import private_redis

    with private_redis() as url:
        for res in await run(url, rounds=2, per_writer=20):
            print(res)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
