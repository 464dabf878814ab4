"""Redis under pressure: out of memory (``maxmemory`` with ``noeviction``) and stalled (busy
or frozen). The API answers clear problems (507, 503) in bounded time, never 500; reads keep
working while Redis is full; a refused write leaves nothing half-done; both recover by
themselves."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest
from redis import exceptions as rexc
from redis.asyncio import Redis

from service import keys as K
from service.config import Settings
from service.embedded import RedisProcess
from service.errors import StoreFull
from service.models import NewEvent
from service.store import Store
from service.sweep import sweep_expired
from tests.faults.conftest import (
    PREFIX,
    TENANT,
    Processes,
    RedisServers,
    assert_problem,
    auth,
    create_tenant,
    redis_client,
    wait_ready,
)
from workers.queue import TurnQueue

MAXMEMORY = "2mb"
FILLER = 16 * 1024
MARGIN = 300_000  # bytes over the limit, so the refusals are not a matter of luck
SOCKET_TIMEOUT_S = 5.0  # the data client's (service/connections.py)
BUSY_FOR_S = 6  # DEBUG SLEEP: longer than the socket timeout
THAW_AFTER_S = 15.0  # a frozen Redis is thawed once every request answered, or after this


async def fill(redis: Redis) -> int:
    """Write filler keys until Redis refuses with OOM, then push it a margin over the limit.

    Redis frees the buffers of each refused command, which can bring it back just under the
    limit, so the margin is written with the limit lifted for a moment."""
    count = 0
    with pytest.raises(rexc.OutOfMemoryError):
        while count < 1000:
            await redis.set(f"filler:{count}", "x" * FILLER)
            count += 1
    await redis.config_set("maxmemory", 0)
    await redis.set("filler:margin", "y" * MARGIN)
    await redis.config_set("maxmemory", MAXMEMORY)
    with pytest.raises(rexc.OutOfMemoryError):
        await redis.set("filler:probe", "1")
    return count


async def session_state(redis: Redis, session_id: str) -> dict[str, Any]:
    keys = K.session_keys(PREFIX, TENANT, session_id)
    return {
        "llen": await redis.llen(keys.history),
        "events": await redis.hget(keys.meta, "events"),
        "messages": await redis.hget(keys.meta, "messages"),
        "last_event_id": await redis.hget(keys.meta, "last_event_id"),
        "turns": await redis.lrange(keys.turns, 0, -1),
        "idem": await redis.hgetall(keys.idem),
    }


async def test_out_of_memory_refuses_writes_with_507_and_keeps_reads(
    procs: Processes, redis_servers: RedisServers
) -> None:
    redis = redis_servers.start(
        persistent=False,
        extra=["--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"],
    )
    key = await create_tenant(redis.url)
    # The request rate limit is on, as it is by default: its counter is a write too.
    api = procs.api(redis.url, SESSIONS_RATE_LIMIT_PER_SECOND="1000")
    await wait_ready(api, procs)
    async with (
        httpx.AsyncClient(base_url=api.url, headers=auth(key), timeout=15) as http,
        redis_client(redis.url) as r,
    ):
        assert (await http.post("/v1/sessions", json={"session_id": "kept"})).status_code == 201
        for prompt in ("first", "second"):
            resp = await http.post("/v1/sessions/kept/messages", json={"prompt": prompt})
            assert resp.status_code == 202, resp.text
        await fill(r)
        before = await session_state(r, "kept")
        lifecycle = K.lifecycle_key(PREFIX, TENANT)
        lifecycle_before = await r.xlen(lifecycle)

        # Create: 507 with a clear detail, and no trace of the session anywhere.
        body = assert_problem(await http.post("/v1/sessions", json={"session_id": "refused"}), 507)
        assert "out of memory" in body["detail"] and "create a session" in body["detail"]
        assert [k async for k in r.scan_iter(match=f"{PREFIX}:{TENANT}:*refused*")] == []
        idx = K.index_keys(PREFIX, TENANT, 0)
        assert await r.zscore(idx.idx, "refused") is None
        assert await r.zscore(idx.exp, "refused") is None
        assert await r.xlen(lifecycle) == lifecycle_before

        # Send: 507, and the session is exactly as it was (counters agree with the history).
        resp = await http.post(
            "/v1/sessions/kept/messages",
            json={"prompt": "refused while full"},
            headers={"Idempotency-Key": "full-1"},
        )
        body = assert_problem(resp, 507)
        assert "out of memory" in body["detail"] and "append" in body["detail"]
        after = await session_state(r, "kept")
        assert after == before
        assert after["llen"] == int(after["events"]) == 2  # the two prompts

        # The job of a send whose append fitted just under the limit is refused as StoreFull
        # (507) too: arq's enqueue is plain commands, whose errors lack the OOM code.
        queue = await TurnQueue.connect(Settings(redis_url=redis.url, key_prefix=PREFIX))
        try:
            with pytest.raises(StoreFull):
                await queue.enqueue_turn(TENANT, "kept", "1-1")  # a job not queued yet
        finally:
            await queue.close()

        # Reads work, and so does readiness (Redis answers; it is full, not down).
        resp = await http.get("/v1/sessions/kept")
        assert resp.status_code == 200 and resp.json()["event_count"] == 2, resp.text
        resp = await http.get("/v1/sessions/kept/messages")
        assert [m["content"] for m in resp.json()["data"]] == ["first", "second"]
        assert (await http.get("/v1/sessions/kept/events")).status_code == 200
        listed = (await http.get("/v1/sessions")).json()["data"]
        assert [s["session_id"] for s in listed] == ["kept"]
        assert (await http.get("/v1/sessions/kept/export")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        # A wrong key is still a 401, not a storage error.
        wrong = {"Authorization": f"Bearer sk_{TENANT}_not-the-key"}
        assert_problem(await http.get("/v1/sessions", headers=wrong), 401)

        # Memory freed: the refused send, retried with its key, is stored once; creates work.
        await r.delete(*[k async for k in r.scan_iter(match="filler:*")])
        resp = await http.post(
            "/v1/sessions/kept/messages",
            json={"prompt": "refused while full"},
            headers={"Idempotency-Key": "full-1"},
        )
        assert resp.status_code == 202 and resp.json()["duplicate"] is False, resp.text
        assert (await http.post("/v1/sessions", json={"session_id": "refused"})).status_code == 201
        state = await session_state(r, "kept")
        assert state["llen"] == int(state["events"]) == 3  # the three prompts
        assert list(state["idem"]) == ["full-1"]
    assert api.proc.poll() is None, procs.output()


async def timed(coro: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = await coro
    return resp, time.monotonic() - started


def requests(http: httpx.AsyncClient, n: int) -> list[Any]:
    """A mix of reads and writes, each a separate request."""
    calls = [
        lambda i: http.get("/v1/sessions/slow"),
        lambda i: http.get("/v1/sessions/slow/events"),
        lambda i: http.post(
            "/v1/sessions/slow/messages",
            json={"prompt": f"during the stall {i}"},
            headers={"Idempotency-Key": f"stall-{i}"},
        ),
        lambda i: http.post("/v1/sessions", json={"session_id": f"made-{i}"}),
    ]
    return [calls[i % len(calls)](i) for i in range(n)]


async def start_api(procs: Processes, redis: RedisProcess) -> tuple[str, str]:
    key = await create_tenant(redis.url)
    api = procs.api(redis.url)
    await wait_ready(api, procs)
    return api.url, key


async def warm_up(http: httpx.AsyncClient, n: int) -> None:
    """Open enough pooled connections in the API for ``n`` concurrent requests."""
    assert (await http.post("/v1/sessions", json={"session_id": "slow"})).status_code == 201
    for resp in await asyncio.gather(*(http.get("/v1/sessions/slow") for _ in range(2 * n))):
        assert resp.status_code == 200


def check_answers(answers: list[tuple[httpx.Response, float]], bound: float) -> list[int]:
    """Every answer came within ``bound`` seconds and is a success or a 503 problem."""
    for resp, seconds in answers:
        assert seconds < bound, f"{resp.request.method} {resp.request.url} took {seconds:.1f}s"
        if resp.status_code == 503:
            assert_problem(resp, 503)
        else:
            assert resp.status_code in (200, 201, 202), resp.text
    return [resp.status_code for resp, _ in answers]


@pytest.mark.slow
async def test_a_busy_redis_gets_503_in_bounded_time_then_recovers(
    procs: Processes, redis_servers: RedisServers
) -> None:
    """``DEBUG SLEEP`` longer than the client's socket timeout: Redis is blocked, then back."""
    redis = redis_servers.start(persistent=False)
    url, key = await start_api(procs, redis)
    async with httpx.AsyncClient(base_url=url, headers=auth(key), timeout=30) as http:
        await warm_up(http, 8)
        # its own connection, without a socket timeout: it waits out the sleep
        async with redis_client(redis.url) as admin:
            sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", BUSY_FOR_S))
            try:
                await asyncio.sleep(0.2)
                answers = await asyncio.gather(*(timed(c) for c in requests(http, 8)))
            finally:
                await asyncio.wait_for(sleeper, 30)
        statuses = check_answers(answers, bound=SOCKET_TIMEOUT_S + 2)
        assert 503 in statuses, statuses
        # Right after: served again, by the same process, without a restart.
        resp, seconds = await timed(http.get("/v1/sessions/slow"))
        assert resp.status_code == 200 and seconds < 1, resp.text
        resp = await http.post("/v1/sessions/slow/messages", json={"prompt": "after"})
        assert resp.status_code == 202, resp.text


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_frozen_redis_gets_503_long_before_it_thaws(
    procs: Processes, redis_servers: RedisServers
) -> None:
    """SIGSTOP: Redis still accepts connections (the kernel does) but never answers, as when
    its host stalls. Every request fails after one socket timeout, however many arrive at once
    and whether its connection is pooled or new, not when Redis comes back."""
    redis = redis_servers.start(persistent=False)
    assert redis.proc is not None
    url, key = await start_api(procs, redis)
    async with httpx.AsyncClient(base_url=url, headers=auth(key), timeout=60) as http:
        await warm_up(http, 8)
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            # the first round times out on pooled connections, the second connects anew
            for _ in range(2):
                answers = await asyncio.wait_for(
                    asyncio.gather(*(timed(c) for c in requests(http, 16))), THAW_AFTER_S
                )
                statuses = check_answers(answers, bound=SOCKET_TIMEOUT_S + 2)
                assert set(statuses) == {503}, statuses
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        resp = await http.get("/readyz")
        assert resp.status_code == 200, resp.text
        resp = await http.post("/v1/sessions/slow/messages", json={"prompt": "after"})
        assert resp.status_code == 202, resp.text


async def test_a_full_redis_still_gets_its_live_window_trimmed(
    redis_servers: RedisServers,
) -> None:
    """When Redis is out of memory no writer trims the live window, and the sweep's marker
    (an XADD) is refused: the sweep still drops every entry past the window but the newest,
    which stays instead of the marker."""
    redis = redis_servers.start(
        persistent=False,
        extra=["--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"],
    )
    async with redis_client(redis.url) as r:
        store = Store(r, prefix=PREFIX, live_window_seconds=1)
        acme = store.tenant(TENANT)
        await acme.create("chatty", model="m")
        for i in range(50):
            await acme.append("chatty", [NewEvent("user.message", {"content": f"{i} " * 500})])
        live = K.live_key(PREFIX, TENANT, 0)
        held = await r.xlen(live)
        (newest, _), *_ = await r.xrevrange(live, count=1)
        await fill(r)
        report = await sweep_expired(store, [TENANT], now_ms=int(newest.split("-")[0]) + 60_000)
        assert report.trimmed == held - 1
        assert [entry_id for entry_id, _ in await r.xrange(live)] == [newest]
