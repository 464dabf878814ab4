"""The API's /metrics: no ``_created`` series, process collectors, and the queue's and the data
Redis's figures read at scrape time."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.api.routes import health
from service.runtime import Runtime
from tests.api.conftest import TenantKey
from workers.queue import TurnQueue


def sample(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_read_the_queue_and_redis_at_scrape_time(
    client: httpx.AsyncClient,
    queue: TurnQueue,
    runtime: Runtime,
    acme: TenantKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "SCRAPE_READ_EVERY_S", 0.2)
    before = (await client.get("/metrics")).text
    waiting = sample(before, "sessions_queue_jobs")
    assert waiting is not None
    await queue.enqueue_turn(acme.id, "no-such-session", "1-0")
    await queue.enqueue_turn(acme.id, "no-such-session", "2-0")
    # a job deferred to later (as arq queues a cron tick ahead of its time) is not waiting
    await queue.pool.enqueue_job("run_turn", acme.id, "later", "3-0", _defer_by=600)
    again = (await client.get("/metrics")).text
    assert sample(again, "sessions_queue_jobs") == waiting, "read again within the interval"
    await asyncio.sleep(0.25)
    after = (await client.get("/metrics")).text
    assert sample(after, "sessions_queue_jobs") == waiting + 2
    age = sample(after, "sessions_queue_oldest_job_age_seconds")
    assert age is not None and 0 <= age < 60
    assert sample(after, "sessions_queue_running_jobs") == 0
    assert sample(after, 'sessions_redis_maxmemory_policy{policy="noeviction"}'), after
    assert (sample(after, "sessions_redis_used_memory_bytes") or 0) > 0
    assert sample(after, "sessions_redis_evicted_keys_total") is not None
    assert "_created" not in after
    assert sample(after, "process_cpu_seconds_total") is not None
    assert "python_gc_collections_total" in after
    await queue.pool.delete(queue.names.queue)
