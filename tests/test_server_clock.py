"""Times come from Redis, never the API host: with the host's clock an hour off, live counts (on
a single server and on the Cluster, where they are read outside the session scripts) and tenant
creation times are unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from service.store import Store
from service.tenants import TenantRegistry
from tests.conftest import cluster_client

HOUR = 3600.0


@pytest.fixture(params=["real", "cluster"])
async def redis(request: pytest.FixtureRequest, redis_server_url: str) -> AsyncIterator[Any]:
    client: Any
    if request.param == "real":
        client = Redis.from_url(redis_server_url, decode_responses=True)
        await client.flushall()
    else:
        client = await cluster_client(request.getfixturevalue("redis_cluster_nodes"))
    try:
        yield client
    finally:
        await client.aclose()


def skew_host_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


@pytest.mark.parametrize("skew", [HOUR, -HOUR])
async def test_live_counts_use_the_server_clock(
    redis: Any, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    store = Store(redis, prefix="clock", default_ttl=3600, index_shards=4)
    acme = store.tenant("acme")
    await acme.create("short", model="m", ttl_seconds=60)
    await acme.create("long", model="m", ttl_seconds=2 * 3600)
    await acme.create("inf", model="m", infinite=True)
    await acme.create("gone", model="m", ttl_seconds=1)
    await asyncio.sleep(1.1)  # expired in Redis; its index entries wait for the sweep
    skew_host_clock(monkeypatch, skew)
    assert await acme.count_live() == 3
    assert await acme.count_finite_live() == 2


async def test_tenant_creation_time_comes_from_redis(
    redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds, _ = await redis.time()
    skew_host_clock(monkeypatch, HOUR)
    tenant, _ = await TenantRegistry(redis, "clock").create("acme")
    assert abs(tenant.created_at_ms - int(seconds) * 1000) < 60_000
