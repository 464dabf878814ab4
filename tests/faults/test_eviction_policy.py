"""A data Redis that may evict keys (any ``maxmemory-policy`` but ``noeviction``) is reported
loudly: ``/readyz`` fails with a clear problem, the API and the worker log an error, the metric
says so; ``SESSIONS_ALLOW_EVICTION=true`` accepts it. Real processes on a real redis-server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults.conftest import (
    Processes,
    RedisServers,
    assert_problem,
    redis_client,
    until,
)


async def readyz(url: str, procs: Processes) -> httpx.Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            try:
                return await http.get("/readyz")
            except httpx.TransportError:
                assert loop.time() < deadline, procs.output()
                await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_an_evicting_redis_fails_readiness_and_is_logged(
    procs: Processes, redis_servers: RedisServers
) -> None:
    redis = redis_servers.start(persistent=False, extra=["--maxmemory-policy", "allkeys-lru"])
    api = procs.api(redis.url, SESSIONS_LOG_LEVEL="INFO")
    worker = procs.worker(redis.url, SESSIONS_LOG_LEVEL="INFO")
    body = assert_problem(await readyz(api.url, procs), 503)
    assert "allkeys-lru" in body["detail"] and "noeviction" in body["detail"]
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
        metrics = (await http.get("/metrics")).text
    assert 'sessions_redis_maxmemory_policy{policy="allkeys-lru"} 1.0' in metrics
    await until(
        lambda: procs.output().count("redis.eviction_policy_unsafe") >= 2,
        "the API and the worker to log the policy",
        procs,
        timeout=30,
    )
    assert worker.poll() is None  # reported, not fatal: turns still run

    # fixed in place (what an operator does): ready again at the next probe
    async with redis_client(redis.url) as admin:
        await admin.config_set("maxmemory-policy", "noeviction")
    assert (await readyz(api.url, procs)).status_code == 200


@pytest.mark.slow
async def test_an_accepted_eviction_policy_is_ready_but_still_logged(
    procs: Processes, redis_servers: RedisServers
) -> None:
    redis = redis_servers.start(persistent=False, extra=["--maxmemory-policy", "volatile-lru"])
    api = procs.api(redis.url, SESSIONS_LOG_LEVEL="INFO", SESSIONS_ALLOW_EVICTION="true")
    assert (await readyz(api.url, procs)).status_code == 200
    await until(lambda: "redis.eviction_policy_unsafe" in procs.output(), "the log line", procs, 30)
