"""A job starts as soon as it is queued: an idle worker waits on the queue's wake-up list, not
out a fixed poll delay; a job nobody announced (arq's own enqueue) starts at the next poll."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.models import NewEvent
from service.runtime import Runtime
from service.store import TenantStore
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers import queue as queue_module
from workers.queue import RUN_TURN, TurnQueue

LONG_WAIT_S = 3.0  # a poll delay no test below may wait out


async def sessions_and_worker(
    runtime: Runtime, start_worker: WorkerFactory, sessions: list[str], **settings: Any
) -> TenantStore:
    """``sessions`` created, then one worker with ``settings`` past its first poll."""
    store = runtime.store.tenant("acme")
    for sid in sessions:
        await store.create(sid, model="dev-echo")
    await start_worker(runtime.settings.model_copy(update=settings))
    await asyncio.sleep(0.3)
    return store


async def test_turns_start_at_once_however_long_the_poll_delay(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = await sessions_and_worker(
        runtime, start_worker, ["quick"], worker_poll_delay_seconds=LONG_WAIT_S
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(3):
        await send(store, queue, "quick", f"prompt {i}")
        await wait_idle(store, "quick")
    assert loop.time() - started < 2.0  # a poll every 3 s would have taken 6 s or more
    assert await queue.pool.llen(queue.names.wake) == 0  # every wake-up was taken


async def test_a_job_nobody_announced_starts_at_the_next_poll(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = await sessions_and_worker(
        runtime, start_worker, ["quiet"], worker_poll_delay_seconds=0.3
    )
    res = await store.append(
        "quiet", [NewEvent(type="user.message", data={"content": "hi"})], enqueue_turn=True
    )
    message = res.event_ids[0]
    job_id = queue.names.turn_job("acme", "quiet", message)
    # arq's own enqueue pushes no wake-up, as with its retries and cron jobs
    assert await queue.pool.enqueue_job(RUN_TURN, "acme", "quiet", message, _job_id=job_id)
    assert await queue.pool.llen(queue.names.wake) == 0
    events = await wait_idle(store, "quiet", timeout=10)
    assert [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"] == [message]


async def test_a_full_worker_takes_the_next_job_as_soon_as_a_slot_frees(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    sessions = ["full-1", "full-2", "full-3"]
    store = await sessions_and_worker(
        runtime, start_worker, sessions, worker_poll_delay_seconds=LONG_WAIT_S, worker_concurrency=1
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    for sid in sessions:  # queued together: two of them wait for the one slot
        await send(store, queue, sid, "hello")
    for sid in sessions:
        await wait_idle(store, sid)
    assert loop.time() - started < 2.0  # not a 3 s wait per freed slot


async def test_a_wake_up_for_a_job_not_yet_due_by_the_workers_clock_is_chased(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's score is the enqueuing host's time: when that clock runs a little ahead of the
    worker's, the woken worker finds the job not yet due, and looks again shortly."""
    store = await sessions_and_worker(
        runtime, start_worker, ["skew"], worker_poll_delay_seconds=LONG_WAIT_S
    )
    await send(store, queue, "skew", "first")  # a job that ended: arq's own counts move
    await wait_idle(store, "skew")
    clock = queue_module.timestamp_ms
    monkeypatch.setattr(queue_module, "timestamp_ms", lambda: clock() + 10)  # 10 ms ahead
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send(store, queue, "skew", "hello")
    await wait_idle(store, "skew")
    assert loop.time() - started < 2.0  # not the 3 s wait that ends the next wake-up
