"""The worker's liveness record: one per host, written by arq, read by ``worker --check``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from service.config import Settings
from service.runtime import Runtime
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers.metrics import CRON_RUNS
from workers.queue import QueueNames, TurnQueue
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


async def _next_tick(ticks: Any) -> None:
    before = ticks._value.get()
    for _ in range(200):
        await asyncio.sleep(0.05)
        if ticks._value.get() != before:
            return
    raise AssertionError("no watchdog tick in 10 s")


@pytest.mark.parametrize("settings", ["single"], indirect=True)
async def test_routine_ticks_stay_out_of_an_info_log(
    runtime: Runtime,
    queue: TurnQueue,
    start_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The watchdog's ticks (every 2 s) and the health record's writes are not logged at INFO;
    the lines of the jobs that do work are."""
    ticks = CRON_RUNS.labels("watchdog", "ok")
    tick = QueueNames.of(runtime.settings).cron("watchdog")
    store = runtime.store.tenant("acme")
    await store.create("s1", model="dev-echo")
    with caplog.at_level(logging.INFO):
        await start_worker(health_check_interval=0.2)
        await send(store, queue, "s1", "hello")
        await wait_idle(store, "s1")
        await _next_tick(ticks)
    lines = [r.getMessage() for r in caplog.records if r.name == "arq.worker"]
    assert any("run_turn" in line for line in lines), lines
    assert not [x for x in lines if f" {tick}(" in x or f" {tick} " in x or "health" in x]

    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        await _next_tick(ticks)
    assert any(f"→ {tick}(" in r.getMessage() for r in caplog.records if r.name == "arq.worker")
