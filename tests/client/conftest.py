"""Client fixtures: the real app in this process (through a streaming ASGI transport), a real
Redis, and the real arq worker running in this event loop, so turns get real dev-model replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis_sessions_client import SessionClient

from service.api.main import create_app
from service.config import Settings
from service.runtime import Runtime
from tests.client.asgi import StreamingASGITransport
from workers.queue import TurnQueue
from workers.settings import build_worker

BASE_URL = "http://sessions.test"


@pytest.fixture
def settings(redis_server_url: str) -> Settings:
    return Settings(
        redis_url=redis_server_url,
        key_prefix="ct",
        rate_limit_per_second=0,
        job_timeout_seconds=20,
        worker_poll_delay_seconds=0.005,
    )


@pytest.fixture
async def api_key(runtime: Runtime) -> str:
    _, key = await runtime.tenants.create("acme")
    return key


@pytest.fixture
async def transport(
    settings: Settings, runtime: Runtime, queue: TurnQueue
) -> AsyncIterator[StreamingASGITransport]:
    app = create_app(settings, runtime=runtime, queue=queue)
    t = StreamingASGITransport(app)
    yield t
    await t.aclose()
    assert not t.errors, f"the app raised: {t.errors!r}"


async def start_worker(settings: Settings, runtime: Runtime) -> AsyncIterator[None]:
    worker: Any = build_worker(settings, runtime=runtime)
    task = asyncio.create_task(worker.async_run())
    try:
        yield
    finally:
        # Let the poll loop end between two iterations: a cancel landing inside arq's WATCH
        # pipeline leaves a pipeline holding a connection (a ResourceWarning when collected).
        worker.burst, worker.max_burst_jobs = True, 0
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await worker.close()


@pytest.fixture
async def worker(settings: Settings, runtime: Runtime) -> AsyncIterator[None]:
    async for _ in start_worker(settings, runtime):
        yield


@pytest.fixture
async def idle_client(
    transport: StreamingASGITransport, api_key: str
) -> AsyncIterator[SessionClient]:
    """A client of a service whose turns nobody answers (no worker)."""
    async with SessionClient(BASE_URL, api_key=api_key, transport=transport) as c:
        yield c


@pytest.fixture
async def client(idle_client: SessionClient, worker: None) -> SessionClient:
    """A client of the full service: API and worker."""
    return idle_client
