"""The worker's liveness record: one per host, written by arq, read by ``worker --check``."""

from __future__ import annotations

import asyncio

from service.config import Settings
from tests.workers.conftest import WorkerFactory
from workers.queue import QueueNames
from workers.settings import check_health


async def test_check_health_sees_this_hosts_worker_only(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    assert not await check_health(settings)
    await start_worker()
    for _ in range(100):
        if await check_health(settings):
            break
        await asyncio.sleep(0.05)
    assert await check_health(settings)
    assert not await check_health(settings, host="another-pod")


def test_crash_retry_delay_is_bound_to_the_job_timeout(settings: Settings) -> None:
    """arq retries a dead worker's job after its largest function timeout + 10 s: the cron jobs
    must not stretch that beyond the turn job's own backstop."""
    from workers.settings import build_worker
    from workers.turns import job_backstop_seconds

    worker = build_worker(settings)
    backstop = job_backstop_seconds(settings.job_timeout_seconds)
    assert backstop > settings.job_timeout_seconds
    assert worker.in_progress_timeout_s == backstop + 10
    jobs = QueueNames.of(settings).jobs  # the key prefix, "wt:"
    assert {c.name for c in worker.cron_jobs} == {
        jobs + name for name in ("sweep_expired", "watchdog", "apply_retention")
    }
