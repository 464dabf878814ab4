"""The queue Redis (``SESSIONS_QUEUE_REDIS_URL``) dies while the data Redis is up: a prompt whose
append succeeded but whose enqueue failed, and the jobs the queue held, are answered once the queue
Redis is back (empty: it kept nothing), by the watchdog, exactly once each."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from service.config import Settings
from service.errors import StoreUnavailable
from service.models import NewEvent
from service.runtime import Runtime
from service.store import TenantStore
from tests.faults.conftest import PREFIX, TENANT, Processes, RedisServers, create_tenant
from tests.faults.test_turn_failover import one_reply_each
from tests.workers.conftest import send, wait_idle
from workers.queue import TurnQueue


@pytest.fixture
def settings(redis_servers: RedisServers) -> Settings:
    data = redis_servers.start("data", persistent=False)
    queue = redis_servers.start("queue", persistent=False)
    return Settings(redis_url=data.url, queue_redis_url=queue.url, key_prefix=PREFIX)


async def session_and_worker(
    procs: Processes, runtime: Runtime, sid: str
) -> tuple[TenantStore, subprocess.Popen[bytes]]:
    """The tenant, session ``sid`` and one worker process on the test's data and queue Redis."""
    url, queue_url = runtime.settings.redis_url, runtime.settings.queue_redis_url
    assert url is not None and queue_url is not None
    await create_tenant(url)
    store = runtime.store.tenant(TENANT)
    await store.create(sid, model="dev-echo")
    return store, procs.worker(url, SESSIONS_QUEUE_REDIS_URL=queue_url)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_prompt_whose_enqueue_failed_is_answered_once_the_queue_is_back(
    procs: Processes, runtime: Runtime, redis_servers: RedisServers
) -> None:
    store, worker = await session_and_worker(procs, runtime, "q")
    queue_server = redis_servers.servers[-1]
    queue = await TurnQueue.connect(runtime.settings)
    try:
        first = await store.append(
            "q", [NewEvent(type="user.message", data={"content": "one"})], enqueue_turn=True
        )
        await queue.enqueue_turn(TENANT, "q", first.event_ids[0])
        await wait_idle(store, "q", timeout=30)
        queue_server.kill()
        second = await store.append(
            "q", [NewEvent(type="user.message", data={"content": "two"})], enqueue_turn=True
        )
        with pytest.raises(StoreUnavailable):  # the API answers 503 here; the prompt is kept
            await queue.enqueue_turn(TENANT, "q", second.event_ids[0])
        await asyncio.sleep(1.0)  # the worker polls the dead queue Redis a few hundred times
        queue_server.start()
        await answered(procs, store, "q", [first.event_ids[0], second.event_ids[0]], timeout=45)
        assert worker.poll() is None, procs.output()
    finally:
        await queue.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_worker_whose_queue_redis_is_demoted_stays_up_and_works_once_promoted(
    procs: Processes, runtime: Runtime
) -> None:
    """A failover demotes the queue's primary: the server ends the wait of every worker blocked
    on the wake-up list, and refuses their writes, until a primary is back."""
    store, worker = await session_and_worker(procs, runtime, "d")
    queue = await TurnQueue.connect(runtime.settings)
    try:
        first = await send(store, queue, "d", "one")
        await wait_idle(store, "d", timeout=30)  # the worker now waits on the wake-up list
        await queue.pool.execute_command("REPLICAOF", "127.0.0.1", "1")  # no such primary
        await asyncio.sleep(1.5)
        assert worker.poll() is None, procs.output()
        await queue.pool.execute_command("REPLICAOF", "NO", "ONE")
        second = await send(store, queue, "d", "two")
        await answered(procs, store, "d", [first, second], timeout=30)
        assert worker.poll() is None, procs.output()
    finally:
        await queue.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_worker_stopped_while_its_queue_redis_is_a_replica_exits_cleanly(
    procs: Processes, runtime: Runtime
) -> None:
    """SIGTERM (a rollout) while the queue Redis refuses writes: the worker cannot delete its
    health record, and still stops in order, without an uncaught error."""
    _, worker = await session_and_worker(procs, runtime, "s")
    queue = await TurnQueue.connect(runtime.settings)
    try:
        await asyncio.sleep(1)  # started, waiting on the wake-up list
        await queue.pool.execute_command("REPLICAOF", "127.0.0.1", "1")  # no such primary
        await asyncio.sleep(1)
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
        assert code == 0, procs.output()
        assert "worker.health_record_left" in procs.output()
        assert "uncaught exception" not in procs.output()
    finally:
        await queue.pool.execute_command("REPLICAOF", "NO", "ONE")
        await queue.close()


async def answered(
    procs: Processes, store: TenantStore, sid: str, prompts: list[str], timeout: float
) -> None:
    """Each of ``prompts`` answered once, in order, within ``timeout``."""
    try:
        events = await wait_idle(store, sid, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(procs.output()) from exc
    one_reply_each(events, prompts)
