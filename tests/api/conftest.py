"""Fixtures of the API tests: the app in-process (``httpx.ASGITransport``) on the suite's real
Redis, with a real turn queue; tenants and their keys; a real uvicorn server for streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.api.main import create_app
from service.config import Settings
from service.embedded import free_port
from service.runtime import Runtime
from tests.conftest import cluster_client
from workers.queue import TurnQueue

ADMIN_KEY = "admin-test-key-0123456789"
PREFIX = "apit"


@dataclass
class TenantKey:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "queue_redis_url": redis_url,
        "key_prefix": PREFIX,
        "admin_key": SecretStr(ADMIN_KEY),
        "rate_limit_per_second": 0,
        "max_message_bytes": 16 * 1024,
        "default_ttl_seconds": 3600,
        "max_sessions_per_tenant": 1000,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["single", "cluster"])
async def settings(
    request: pytest.FixtureRequest, redis_server_url: str, real_redis: Redis
) -> Settings:
    """Session data on the suite's single Redis, or on its 3-node Cluster (the queue stays on
    the single one: arq cannot run on a Cluster)."""
    if request.param == "single":
        return make_settings(redis_server_url)
    nodes = request.getfixturevalue("redis_cluster_nodes")
    await (await cluster_client(nodes)).aclose()  # flushed
    return make_settings(
        redis_server_url, redis_cluster=True, redis_cluster_nodes=nodes, index_shards=4
    )


@pytest.fixture
def data_redis(runtime: Runtime) -> Any:
    """The client of the session data: the single server or the Cluster."""
    return runtime.redis


@pytest.fixture
def app(settings: Settings, runtime: Runtime, queue: TurnQueue) -> FastAPI:
    return create_app(settings, runtime=runtime, queue=queue)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def acme(runtime: Runtime) -> TenantKey:
    tenant, key = await runtime.tenants.create("acme", name="Acme")
    return TenantKey(tenant.id, key)


@pytest.fixture
async def globex(runtime: Runtime) -> TenantKey:
    tenant, key = await runtime.tenants.create("globex", name="Globex")
    return TenantKey(tenant.id, key)


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


Serve = Callable[[FastAPI], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Run apps on real uvicorn servers (ASGITransport buffers whole responses, so streams need
    a socket); every server is stopped at the end of the test."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: FastAPI) -> str:
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        for _ in range(500):
            if server.started:
                return f"http://127.0.0.1:{port}"
            await asyncio.sleep(0.01)
        raise RuntimeError("uvicorn did not start")

    yield start
    for server, _ in servers:
        server.should_exit = True
        server.force_exit = True
    for _, task in servers:
        await asyncio.wait_for(task, timeout=10)


async def snapshot(redis: Any) -> dict[bytes, bytes | None]:
    """Every key with its serialized value (DUMP), to prove a refused call changed nothing; on a
    Cluster, the keys of every primary."""
    if isinstance(redis, RedisCluster):
        servers = [{"host": n.host, "port": n.port} for n in redis.get_primaries()]
    else:
        servers = [redis.connection_pool.connection_kwargs]
    out: dict[bytes, bytes | None] = {}
    for kwargs in servers:
        raw = Redis(**{**kwargs, "decode_responses": False})
        try:
            for key in sorted([k async for k in raw.scan_iter(count=1000)]):
                out[key] = await raw.dump(key)
        finally:
            await raw.aclose()
    return dict(sorted(out.items()))
