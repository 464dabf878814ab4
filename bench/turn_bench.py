"""Turn overhead with the dev model (no model latency), 50 concurrent sessions.

Two paths:
- worker: from the user message being appended and enqueued to its ``session.idle``, measured
  with the store and a follower (the process's one live reader) in this process and one worker
  process;
- send_and_wait: the client's ``send_and_wait`` through a real API process (uvicorn) and one
  worker process: what an app sees.
Two loads each:
- paced: 50 sessions, each sending its next prompt after a think time of 0.5-1.5 s (about 50
  turns/s offered): the per-turn overhead. Targets: p50 <= 10 ms, p99 <= 50 ms.
- saturated: 50 sessions sending back to back: the throughput one worker reaches, and the
  latency that queueing then adds (about 50 / throughput).
Each round starts on an empty queue: a saturated round leaves jobs behind (one per prompt,
many of them already answered by the job before them), and a paced round measured while the
worker still works through those would measure that backlog, not the per-turn overhead.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from redis.asyncio import Redis

from bench.common import Result, percentile
from service.config import Settings
from service.embedded import free_port
from service.models import NewEvent
from service.runtime import build_runtime
from service.store.live import entry_parts
from service.tenants import TenantRegistry
from workers.queue import QueueNames, TurnQueue

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "tb"  # the key prefix of the processes this benchmark starts
SESSIONS = 50
TURNS_PER_SESSION = 12
THINK_S = (0.5, 1.5)


@contextmanager
def processes(
    redis_url: str, *commands: list[str], env: dict[str, str] | None = None
) -> Iterator[None]:
    """``sessionctl`` sub-commands as child processes on ``redis_url``, stopped afterwards."""
    env = {
        **os.environ,
        "SESSIONS_REDIS_URL": redis_url,
        "SESSIONS_KEY_PREFIX": PREFIX,
        "SESSIONS_LOG_LEVEL": "WARNING",
        "SESSIONS_RATE_LIMIT_PER_SECOND": "0",
        **(env or {}),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", *cmd],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for cmd in commands
    ]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _think(paced: bool) -> None:
    if paced:
        await asyncio.sleep(random.uniform(*THINK_S))


async def _worker_latencies(redis_url: str, round_no: int, paced: bool) -> list[float]:
    settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
    runtime = build_runtime(settings)
    queue = await TurnQueue.connect(settings)
    store = runtime.store.tenant("bench")
    samples: list[float] = []

    async def session(n: int) -> None:
        sid = f"w{round_no}-{n}"
        await store.create(sid, model="dev-echo")
        notify = asyncio.Event()
        following = await store.follow(sid, None, notify, from_now=True)
        try:
            for i in range(TURNS_PER_SESSION):
                await _think(paced)
                start = time.perf_counter()
                res = await store.append(
                    sid,
                    [NewEvent(type="user.message", data={"content": f"prompt {i}"})],
                    enqueue_turn=True,
                )
                await queue.enqueue_turn("bench", sid, res.event_ids[0])
                done = False
                while not done:
                    async with asyncio.timeout(5):
                        await notify.wait()
                    notify.clear()
                    done = any(
                        entry_parts(e)[2].startswith("session.idle") for e in following.sub.take()
                    )
                samples.append((time.perf_counter() - start) * 1000)
        finally:
            following.close()

    await asyncio.gather(*(session(n) for n in range(SESSIONS)))
    await queue.close()
    await runtime.close()
    return samples


async def _client_latencies(redis_url: str, port: int, paced: bool, round_no: int) -> list[float]:
    from redis_sessions_client import SessionClient

    redis = Redis.from_url(redis_url, decode_responses=True)
    _, key = await TenantRegistry(redis, PREFIX).create(f"client{round_no}")
    await redis.aclose()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    samples: list[float] = []
    async with SessionClient(base, api_key=key) as client:

        async def session(n: int) -> None:
            s = await client.create_session({"session_id": f"c{n}", "model": "dev-echo"})
            for i in range(TURNS_PER_SESSION):
                await _think(paced)
                start = time.perf_counter()
                await s.send_and_wait({"prompt": f"prompt {i}"}, timeout=30)
                samples.append((time.perf_counter() - start) * 1000)
            await s.destroy()

        await asyncio.gather(*(session(n) for n in range(SESSIONS)))
    return samples


async def _drained(redis_url: str, within: float = 120.0) -> None:
    """Wait until the worker has taken every queued job (and a moment for the last ones)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + within
        while await redis.zcard(QueueNames.of(Settings(key_prefix=PREFIX)).queue):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the turn queue did not drain in {within:.0f} s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


async def run(redis_url: str) -> list[Result]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    await redis.aclose()
    out: list[Result] = []
    with processes(redis_url, ["worker"]):
        await asyncio.sleep(1.0)
        await _worker_latencies(redis_url, 0, paced=False)  # warm-up round
        for n, paced in enumerate((True, False), start=1):
            await _drained(redis_url)
            start = time.perf_counter()
            samples = await _worker_latencies(redis_url, n, paced)
            out += _summary("worker: enqueue to session.idle", samples, paced, start)
        await _drained(redis_url)
    port = free_port()
    with processes(redis_url, ["worker"], ["serve", "--port", str(port)]):
        await _client_latencies(redis_url, port, False, 99)  # warm-up round, as for the worker
        for n, paced in enumerate((True, False)):
            await _drained(redis_url)
            start = time.perf_counter()
            samples = await _client_latencies(redis_url, port, paced, n)
            out += _summary("client send_and_wait (API + worker)", samples, paced, start)
    return out


def _summary(name: str, samples: list[float], paced: bool, start: float) -> list[Result]:
    rate = len(samples) / (time.perf_counter() - start)
    load = "paced" if paced else "saturated"
    note = f"{len(samples)} turns, {SESSIONS} sessions, {rate:.0f} turns/s, dev model"
    p50, p99 = ("<= 10", "<= 50") if paced else ("", "")
    return [
        Result("turns", f"{name}, {load}, p50", percentile(samples, 50), "ms", target=p50,
               higher_is_better=False, notes=note, extra={"turns_per_s": rate}),
        Result("turns", f"{name}, {load}, p99", percentile(samples, 99), "ms", target=p99,
               higher_is_better=False, notes=note, extra={"turns_per_s": rate}),
    ]  # fmt: skip
