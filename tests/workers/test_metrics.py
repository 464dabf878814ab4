"""Worker metrics move by the right amounts: a turn, a provider failure with its retry, the
periodic jobs. The real arq worker runs in this process on the suite's real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.config import Settings
from service.errors import ProviderError, StoreUnavailable
from service.runtime import Runtime
from tests.providers.fake_openai import FakeOpenAI
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers import cron_jobs, metrics
from workers.queue import TurnQueue

SAMPLES = {
    "answered": ("sessions_worker_turns_total", {"outcome": "answered"}),
    "provider_error": ("sessions_worker_turns_total", {"outcome": "provider_error"}),
    "aborted": ("sessions_worker_turns_total", {"outcome": "aborted"}),
    "gone": ("sessions_worker_turns_total", {"outcome": "session_gone"}),
    "gone_seconds": ("sessions_worker_turn_duration_seconds_count", {"outcome": "session_gone"}),
    "jobs_gone": ("sessions_worker_turn_jobs_total", {"result": "session_gone"}),
    "turn_seconds": ("sessions_worker_turn_duration_seconds_count", {"outcome": "answered"}),
    "first_token": ("sessions_worker_time_to_first_token_seconds_count", {}),
    "provider_ok": ("sessions_worker_provider_call_duration_seconds_count", {"outcome": "ok"}),
    "provider_cancelled": (
        "sessions_worker_provider_call_duration_seconds_count",
        {"outcome": "cancelled"},
    ),
    "provider_500": (
        "sessions_worker_provider_call_duration_seconds_count",
        {"outcome": "server_error"},
    ),
    "retries_500": ("sessions_worker_provider_retries_total", {"kind": "server_error"}),
    "prompt_tokens": ("sessions_worker_tokens_total", {"type": "prompt"}),
    "completion_tokens": ("sessions_worker_tokens_total", {"type": "completion"}),
    "jobs_answered": ("sessions_worker_turn_jobs_total", {"result": "answered"}),
    "jobs_busy": ("sessions_worker_turn_jobs_total", {"result": "busy"}),
    "takeovers": ("sessions_worker_lease_takeovers_total", {}),
    "sweep_ok": ("sessions_worker_cron_runs_total", {"job": "sweep", "result": "ok"}),
    "sweep_seconds": ("sessions_worker_cron_duration_seconds_count", {"job": "sweep"}),
    "retention_ok": ("sessions_worker_cron_runs_total", {"job": "retention", "result": "ok"}),
}


def snapshot() -> dict[str, float]:
    return {
        key: metrics.REGISTRY.get_sample_value(name, labels) or 0.0
        for key, (name, labels) in SAMPLES.items()
    }


def moved(before: dict[str, float]) -> dict[str, float]:
    """The figures that changed since ``before``, by how much."""
    now = snapshot()
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def settings(redis_server_url: str) -> Settings:
    """One Redis is enough here: the counters do not depend on where the data lives."""
    return Settings(
        redis_url=redis_server_url,
        key_prefix="wt",
        job_timeout_seconds=20,
        worker_poll_delay_seconds=0.005,
    )


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def test_a_streamed_turn_moves_each_counter_by_its_amount(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("m1", model="dev-echo", streaming=True)
    await store.update("m1", summary="titled already")  # no title job: one provider call
    await start_worker()
    before = snapshot()
    await send(store, queue, "m1", "count me once")
    events = await wait_idle(store, "m1")
    await until(lambda: moved(before).get("jobs_answered") == 1)
    usage = next(e for e in events if e["type"] == "assistant.message")["data"]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert moved(before) == {
        "answered": 1,
        "turn_seconds": 1,
        "first_token": 1,
        "provider_ok": 1,
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "jobs_answered": 1,
    }


async def test_a_session_deleted_mid_turn_counts_its_turn_as_gone(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("gone", model="dev-echo", streaming=True)
    await store.update("gone", summary="titled already")
    await start_worker(settings.model_copy(update={"dev_stream_delay_ms": 100}))
    before = snapshot()
    await send(store, queue, "gone", "a few words, slowly, to be cut off by a delete")
    for _ in range(200):  # until the model is streaming
        if any(e["type"] == "assistant.message_delta" for e in await store.live_events("gone")):
            break
        await asyncio.sleep(0.02)
    await store.delete("gone")
    await until(lambda: moved(before).get("jobs_gone") == 1)
    assert moved(before) == {
        "gone": 1,
        "gone_seconds": 1,
        "jobs_gone": 1,
        "first_token": 1,
        "provider_cancelled": 1,  # the call cut off
    }


async def test_a_failing_provider_counts_its_retry_error_and_outcome(
    runtime: Runtime,
    queue: TurnQueue,
    start_worker: WorkerFactory,
    settings: Settings,
    fake_openai: FakeOpenAI,
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("m2", model="fail-500")
    await store.update("m2", summary="titled already")
    openai = settings.model_copy(
        update={
            "provider": "openai",
            "openai_base_url": fake_openai.base_url,
            "provider_max_retries": 1,
        }
    )
    await start_worker(openai)
    before = snapshot()
    await send(store, queue, "m2", "fail please")
    await wait_idle(store, "m2", timeout=20)
    await until(lambda: moved(before).get("jobs_answered") == 1)
    assert moved(before) == {
        "provider_error": 1,
        "provider_500": 1,
        "retries_500": 1,
        "jobs_answered": 1,
    }


async def test_periodic_jobs_count_their_runs(runtime: Runtime) -> None:
    before = snapshot()
    ctx = {"runtime": runtime}
    sweep = await metrics.cron_job("sweep", cron_jobs.sweep_expired_job)(ctx)
    await metrics.cron_job("retention", cron_jobs.apply_retention_job)(ctx)
    assert moved(before) == {"sweep_ok": 1, "sweep_seconds": 1, "retention_ok": 1}
    assert sweep["swept"] == 0
    assert metrics.REGISTRY.get_sample_value(
        "sessions_worker_cron_last_success_timestamp_seconds", {"job": "sweep"}
    )


def test_retries_are_counted_whatever_the_log_level() -> None:
    """A retry logged while the level is ERROR is counted all the same, and not printed."""
    import logging

    root = logging.getLogger()
    old_level = root.level
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    root.addHandler(keep)
    root.setLevel(logging.ERROR)
    try:
        before = metrics.REGISTRY.get_sample_value(
            "sessions_worker_provider_retries_total", {"kind": "connection"}
        )
        logging.getLogger("workers.providers.openai").warning(
            "provider call failed, retrying", extra={"kind": "connection", "attempt": 1}
        )
        after = metrics.REGISTRY.get_sample_value(
            "sessions_worker_provider_retries_total", {"kind": "connection"}
        )
    finally:
        root.removeHandler(keep)
        root.setLevel(old_level)
    assert (after or 0) - (before or 0) == 1
    assert not [r for r in seen if r.name == "workers.providers.openai"]


def test_no_created_series_and_process_collectors_are_there() -> None:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.REGISTRY).decode()
    assert "_created" not in text
    assert "process_cpu_seconds_total" in text and "python_gc_collections_total" in text
    assert "tenant" not in text and "session_id" not in text


class Scripted:
    """A provider that streams one delta, then does what ``then`` says."""

    name = "scripted"

    def __init__(self, then: str) -> None:
        self.then = then

    async def complete(self, messages: Any, *, model: str, on_delta: Any = None) -> Any:
        if on_delta is not None:
            await on_delta("a")
        if self.then == "raise":
            raise KeyError("a defect")
        if self.then == "provider_error":
            raise ProviderError("down", kind="server_error")
        await asyncio.sleep(10)  # "hang": until cancelled

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("then", "callback_raises", "outcome"),
    [
        ("hang", True, "cancelled"),  # an abort, a delete, a failed write of a delta
        ("hang", False, "cancelled"),  # the turn's deadline, a shutdown
        ("raise", False, "error"),  # anything else
        ("provider_error", False, "server_error"),
    ],
)
async def test_each_provider_call_counts_once_under_its_outcome(
    then: str, callback_raises: bool, outcome: str
) -> None:
    def count(label: str) -> float:
        sample = metrics.REGISTRY.get_sample_value(
            "sessions_worker_provider_call_duration_seconds_count", {"outcome": label}
        )
        return sample or 0.0

    labels = ("ok", "cancelled", "error", "server_error")
    before = {label: count(label) for label in labels}

    async def on_delta(chunk: str) -> None:
        if callback_raises:
            raise StoreUnavailable("the delta could not be written")

    call = asyncio.ensure_future(
        metrics.MeteredProvider(Scripted(then)).complete([], model="m", on_delta=on_delta)  # type: ignore[arg-type]
    )
    if then == "hang" and not callback_raises:
        await asyncio.sleep(0.05)
        call.cancel()
    with pytest.raises((BaseException,)):
        await call
    assert {label: count(label) - before[label] for label in labels} == {
        label: float(label == outcome) for label in labels
    }
