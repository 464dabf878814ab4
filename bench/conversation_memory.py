"""Redis memory of conversations made through the API and a worker, against the OpenAI Agents
SDK's ``RedisSession`` holding the same messages.

Each session: created through the API, then 5 prompts, each answered (``send_and_wait``) by the
dev model in a worker process: 10 messages. The turn queue runs on a Redis of its own (arq keeps
job records and results for a minute: the queue's memory, not the sessions'). Measured as the
growth of ``used_memory`` over a few
hundred such sessions, divided by their number, on a private redis-server with its key tables
grown beforehand. The baseline is the real ``RedisSession`` (``bench/peer_driver.py``, in the
peer's virtualenv) holding the same 10 messages (the contents read back from our history), stored
as a ``Runner`` turn stores them: the prompt as an easy input message, the reply as the model's
output message (id, status, content parts). Ours keeps its own metadata of a reply (model,
usage, reply_to, finish_reason); the SDK keeps the output message's. A second, stricter row
stores the replies as easy messages too (content only), which no model turn writes.

Live events (deltas, turn markers, idle, titles and copies of durable events) live in a
tenant-wide stream trimmed to the live window: they are measured twice, while the window still
holds every event of the run ("in the live window") and after it has passed ("settled", what a
session costs for its life). The run uses a 3 s window so the benchmark need not wait 5 minutes.

1,000-message sessions are written through the store (one append per message) and measured the
same way against ``RedisSession`` holding the same messages as easy messages (one add each).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from redis.asyncio import Redis

from bench.common import Result
from bench.memory_bench import _many, _presize_keyspace, _used_memory
from bench.peer_bench import Peer
from bench.turn_bench import processes
from service.embedded import free_port
from service.models import NewEvent
from service.store import Store
from service.tenants import TenantRegistry

PROMPTS = 5
WINDOW_S = 3
PREFIX = "tb"


async def _conversations(url: str, port: int, tenant: str, sessions: int, streaming: bool) -> None:
    from redis_sessions_client import SessionClient

    redis = Redis.from_url(url, decode_responses=True)
    _, key = await TenantRegistry(redis, PREFIX).create(tenant)
    await redis.aclose()
    async with SessionClient(f"http://127.0.0.1:{port}", api_key=key) as client:

        async def one(i: int) -> None:
            s = await client.create_session(
                {"session_id": f"c{i:05d}", "model": "dev-echo", "streaming": streaming}
            )
            for n in range(PROMPTS):
                await s.send_and_wait({"prompt": f"Prompt {n} of session {i}: let's plan it"})
            await s.destroy()

        gate = asyncio.Semaphore(25)

        async def gated(i: int) -> None:
            async with gate:
                await one(i)

        await asyncio.gather(*(gated(i) for i in range(sessions)))


async def _settle(redis: Redis, store: Store, tenant: str) -> None:
    """Let the live window pass, then one append trims the live stream (trimming happens on
    writes) and the title jobs finish."""
    await asyncio.sleep(WINDOW_S + 1.5)
    await store.tenant(tenant).append("c00000", [NewEvent("session.idle")])
    await asyncio.sleep(0.5)


async def _peer_memory(
    python: Path,
    url: str,
    redis: Redis,
    prefix: str,
    sessions: int,
    contents: list[str],
    shape: str,
) -> float:
    """``used_memory`` growth per session of the real ``RedisSession`` holding ``contents``."""
    peer = await Peer.start(python, url)
    try:
        await peer.call(op="hello")  # connected before the measurement starts
        await asyncio.sleep(0.5)
        before = await _used_memory(redis)
        await peer.call(op="conversations", prefix=prefix, sessions=sessions,
                        contents=contents, shape=shape)  # fmt: skip
        await asyncio.sleep(0.5)
        return (await _used_memory(redis) - before) / sessions
    finally:
        await peer.close()


async def api_memory(url: str, queue_url: str, python: Path, sessions: int) -> list[Result]:
    redis = Redis.from_url(url, decode_responses=True, max_connections=80)
    await redis.flushall()
    store = Store(redis, prefix=PREFIX, live_window_seconds=WINDOW_S)
    await _presize_keyspace(redis, 12 * sessions)
    port = free_port()
    # the turn queue (arq's jobs and results) on its own Redis, as in a durable deployment
    env = {"SESSIONS_LIVE_WINDOW_SECONDS": str(WINDOW_S), "SESSIONS_QUEUE_REDIS_URL": queue_url}
    figures: dict[str, tuple[float, float]] = {}
    contents: list[str] = []
    try:
        with processes(url, ["worker"], ["serve", "--port", str(port)], env=env):
            await asyncio.sleep(1.5)
            await _conversations(url, port, "warm", 5, False)  # scripts loaded, pools grown
            await _settle(redis, store, "warm")
            for name, streaming in (("plain", False), ("streaming", True)):
                await asyncio.sleep(0.5)
                before = await _used_memory(redis)
                await _conversations(url, port, name, sessions, streaming)
                await asyncio.sleep(0.5)
                live = (await _used_memory(redis) - before) / sessions
                await _settle(redis, store, name)
                settled = (await _used_memory(redis) - before) / sessions
                figures[name] = (live, settled)
        events = await store.tenant("plain").read_events("c00001")
        contents = [e["data"]["content"] for e in events if e["type"].endswith(".message")]
        assert len(contents) == 2 * PROMPTS, contents
        peer = await _peer_memory(python, url, redis, "r", sessions, contents, "runner")
        plain = await _peer_memory(python, url, redis, "p", sessions, contents, "plain")
    finally:
        await store.hub.close()
        await redis.aclose()
    note = f"{sessions} sessions x {PROMPTS} prompts + {PROMPTS} replies, API + worker, dev model"
    layout = "openai-agents RedisSession, the same 10 messages as Runner turns store them"
    return [
        Result("memory", "API conversation of 10 messages, used_memory / session, settled",
               figures["plain"][1], "bytes", peer, layout, "<= 1.5", higher_is_better=False,
               notes=note + f"; after the live window ({WINDOW_S} s here)"),
        Result("memory", "API conversation of 10 messages, settled, against content only",
               figures["plain"][1], "bytes", plain,
               "openai-agents RedisSession, the 10 messages as easy messages (content only)",
               higher_is_better=False, notes="ours keeps model, usage, reply_to of each reply"),
        Result("memory", "API conversation of 10 messages, in the live window",
               figures["plain"][0], "bytes", peer, layout, higher_is_better=False,
               notes="every live event of the run still in the tenant's live stream"),
        Result("memory", "streaming API conversation, settled, against non-streaming",
               figures["streaming"][1], "bytes", figures["plain"][1], "non-streaming, settled",
               "<= 1.2", higher_is_better=False, notes="deltas live only in the live window"),
        Result("memory", "streaming API conversation, in the live window",
               figures["streaming"][0], "bytes", figures["plain"][0],
               "non-streaming, in the live window", higher_is_better=False),
    ]  # fmt: skip


async def long_memory(url: str, python: Path, sessions: int, messages: int = 1000) -> Result:
    from bench.store_bench import CONTENT

    redis = Redis.from_url(url, decode_responses=True, max_connections=40)
    await redis.flushall()
    store = Store(redis, prefix="lm", live_window_seconds=1)
    tenant = store.tenant("long")
    contents = [f"{i} {CONTENT}" for i in range(messages)]
    roles = ("user.message", "assistant.message")
    try:
        await _presize_keyspace(redis, 8 * sessions)

        async def ours(i: int) -> None:
            sid = f"l{i:04d}"
            await tenant.create(sid, model="m")
            for n, text in enumerate(contents):
                await tenant.append(sid, [NewEvent(roles[n % 2], {"content": text})])

        await asyncio.sleep(0.5)
        before = await _used_memory(redis)
        await _many(sessions, ours)
        await asyncio.sleep(1.5)
        await tenant.append("l0000", [NewEvent("session.idle")])  # trims the live stream
        mine = (await _used_memory(redis) - before) / sessions
        peer = await _peer_memory(python, url, redis, "p", sessions, contents, "plain")
    finally:
        await store.hub.close()
        await redis.aclose()
    return Result("memory", f"session of {messages:,} messages, used_memory / session", mine,
                  "bytes", peer, "openai-agents RedisSession, same messages", "<= 1.1",
                  higher_is_better=False,
                  notes=f"{sessions} sessions, one append per message, "
                        f"{len(json.dumps(contents[0]))}-byte content JSON")  # fmt: skip


async def run(
    url: str, queue_url: str, python: Path, *, sessions: int = 300, long_sessions: int = 10
) -> list[Result]:
    """``python``: the peer virtualenv's interpreter (``bench.peer_bench.peer_python``)."""
    out = await api_memory(url, queue_url, python, sessions)
    out.append(await long_memory(url, python, long_sessions))
    return out
