"""Worker fixtures: a real Redis, the real arq worker running in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from service.config import Settings
from service.models import Event, NewEvent
from service.runtime import Runtime
from service.store import TenantStore
from tests.conftest import cluster_client
from workers.queue import TurnQueue
from workers.settings import build_worker


@pytest.fixture(params=["single", "cluster"])
async def settings(request: pytest.FixtureRequest, redis_server_url: str) -> Settings:
    """Data on a single Redis, or on the 3-node Cluster with the queue on the single one (arq
    cannot run on a Cluster)."""
    common = {"key_prefix": "wt", "job_timeout_seconds": 20, "worker_poll_delay_seconds": 0.005}
    if request.param == "single":
        return Settings(redis_url=redis_server_url, **common)
    nodes = request.getfixturevalue("redis_cluster_nodes")
    client = await cluster_client(nodes)  # flushed
    await client.aclose()
    return Settings(
        redis_cluster=True,
        redis_cluster_nodes=nodes,
        redis_url=f"redis://{nodes.split(',')[0]}/0",
        queue_redis_url=redis_server_url,
        index_shards=4,
        **common,
    )


WorkerFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_worker(runtime: Runtime) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers (settings overridable); all are stopped after the test."""
    running: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(settings: Settings | None = None, **overrides: Any) -> Any:
        worker = build_worker(settings or runtime.settings, runtime=runtime, **overrides)
        task = asyncio.create_task(worker.async_run())
        running.append((worker, task))
        return worker

    yield start
    for worker, task in running:
        # arq's own burst exit: finish running jobs, start no new one, leave the poll loop.
        worker.burst = True
        worker.max_burst_jobs = 0
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=30)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await worker.close()


async def send(store: TenantStore, queue: TurnQueue, session_id: str, prompt: str) -> str:
    """What the API does for a send: append the user message with its turn, then enqueue."""
    res = await store.append(
        session_id,
        [NewEvent(type="user.message", data={"content": prompt})],
        enqueue_turn=True,
    )
    await queue.enqueue_turn(store.tenant_id, session_id, res.event_ids[0])
    return res.event_ids[0]


async def wait_idle(store: TenantStore, session_id: str, timeout: float = 15.0) -> list[Event]:
    """Events of the session as live subscribers saw them (the live window: transient events
    and copies of durable ones), once no turn is pending and the last turn ended idle."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if not await store.pending_turns(session_id):
            events = await store.live_events(session_id)
            last_user = max(
                (i for i, e in enumerate(events) if e["type"] == "user.message"), default=-1
            )
            if any(e["type"] == "session.idle" for e in events[last_user + 1 :]):
                return events
        await asyncio.sleep(0.02)
    raise TimeoutError(f"session {session_id} did not become idle in {timeout}s")
