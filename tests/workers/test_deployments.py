"""Two deployments (two key prefixes) sharing one Redis: each has its own queue, wake-up list,
health record, job ids and cron names, so neither's workers take the other's jobs, even for a
tenant and session of the same ids."""

from __future__ import annotations

import asyncio

from arq.jobs import Job

from service.config import Settings
from service.runtime import Runtime, build_runtime
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers.queue import DEFAULT_QUEUE, QueueNames, TurnQueue
from workers.settings import build_worker, cron_jobs_for


def test_the_default_deployment_keeps_its_names_and_others_get_their_own() -> None:
    default = QueueNames.of(Settings())
    assert (default.queue, default.wake) == (DEFAULT_QUEUE, DEFAULT_QUEUE + ":wake")
    assert default.turn_job("acme", "s1", "1-0") == "turn:acme:s1:1-0"
    other = QueueNames.of(Settings(key_prefix="staging"))
    assert (other.queue, other.wake) == ("staging:_queue", "staging:_queue:wake")
    assert other.turn_job("acme", "s1", "1-0") == "staging:turn:acme:s1:1-0"
    assert other.health("pod-1") == "staging:_queue:health-check:pod-1"
    crons = [c.name for c in cron_jobs_for(Settings(key_prefix="staging"))]
    assert crons and all(name.startswith("staging:") for name in crons)
    assert not {c.name for c in cron_jobs_for(Settings())} & set(crons)


async def test_workers_of_two_prefixes_on_one_redis_answer_only_their_own_prompts(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    other_settings = runtime.settings.model_copy(update={"key_prefix": "wtother"})
    other = build_runtime(other_settings)
    other_queue = await TurnQueue.connect(other_settings)
    other_worker = build_worker(other_settings, runtime=other)
    other_task = asyncio.create_task(other_worker.async_run())
    try:
        await start_worker()
        mine, theirs = runtime.store.tenant("acme"), other.store.tenant("acme")
        # sessions of the same tenant on both sides, one of the same id: a job taken by the
        # other side's worker would find no session (or the wrong one) there
        sides = [(mine, queue, "mine"), (theirs, other_queue, "theirs")]
        sent: dict[tuple[str, str], list[str]] = {}
        for store, _, side in sides:
            for sid in ("same", side):
                await store.create(sid, model="dev-echo")
                sent[side, sid] = []
        for i in range(5):
            for store, q, side in sides:
                for sid in ("same", side):
                    sent[side, sid].append(await send(store, q, sid, f"{side} {i}"))
        for store, _, side in sides:
            for sid in ("same", side):
                await wait_idle(store, sid, timeout=30)
                events = await store.read_events(sid)
                replies = [
                    e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"
                ]
                assert replies == sent[side, sid], (side, sid)
        # and every job ran on its own side (one taken by the other side's worker finds no
        # such session there; the watchdog would answer its turn, late)
        for _, q, side in sides:
            for sid in ("same", side):
                for message in sent[side, sid]:
                    job_id = q.names.turn_job("acme", sid, message)
                    job = Job(job_id, q.pool, _queue_name=q.names.queue)
                    result = await job.result(timeout=10)
                    assert result != "session gone", (side, sid, message)
        # the same turn enqueued on both sides is two jobs: neither refuses the other's
        for q in (queue, other_queue):  # (no such turn: the jobs just end)
            assert await q.enqueue_turn("acme", "same", "9-0")
    finally:
        other_worker.burst, other_worker.max_burst_jobs = True, 0
        await asyncio.wait_for(other_task, timeout=30)
        await other_worker.close()
        await other_queue.close()
        await other.close()
