"""Prometheus metrics of one worker process, served on their own port
(``sessionctl worker --metrics-port``, ``SESSIONS_WORKER_METRICS_PORT``).

Label sets are bounded: outcomes and results are fixed words, provider error kinds are
``ProviderErrorKind`` values, token types are ``prompt`` and ``completion``. Tenant and session
ids are never labels (per-tenant figures are ``sessionctl stats``). The queue's depth and the age
of its oldest job are not here: every worker would report the same number; the API exports them,
read at scrape time (``service.metrics.QueueFigures``).

The metrics are module-level, in a registry of their own: a worker is one process (tests that
run several workers in one process read differences).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from service import tracing
from service.errors import ProviderError
from workers.providers.base import ChatMessage, Completion, DeltaCallback, Provider

disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
    REGISTRY.register(_collector)

TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# How a turn ended in this worker (one count per turn answered, per turn that passed its
# deadline and was handed on, per turn given up).
TURN_OUTCOMES = (
    "answered",
    "provider_error",
    "aborted",
    "superseded",
    "session_gone",
    "deadline",
    "timed_out",
)

TURNS = Counter(
    "sessions_worker_turns",
    "Turns ended in this worker, by outcome: answered, provider_error, aborted, superseded, "
    "session_gone (deleted or expired mid-turn), deadline (passed its deadline, handed to a "
    "new job), timed_out (given up).",
    ["outcome"],
    registry=REGISTRY,
)
TURN_SECONDS = Histogram(
    "sessions_worker_turn_duration_seconds",
    "Time from the start of a turn (context read) to its reply, error or abort.",
    ["outcome"],
    buckets=TURN_BUCKETS,
    registry=REGISTRY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "sessions_worker_time_to_first_token_seconds",
    "Time from the provider call to its first streamed chunk (streaming sessions only).",
    buckets=FIRST_TOKEN_BUCKETS,
    registry=REGISTRY,
)
PROVIDER_SECONDS = Histogram(
    "sessions_worker_provider_call_duration_seconds",
    "Provider calls (retries included) by outcome: ok, the provider error kind, cancelled "
    "(stopped by the worker: an abort, a delete, a lost lease, a failed write of a delta, the "
    "turn's deadline or a shutdown) or error (anything else).",
    ["outcome"],
    buckets=TURN_BUCKETS,
    registry=REGISTRY,
)
PROVIDER_RETRIES = Counter(
    "sessions_worker_provider_retries",
    "Provider requests retried, by the kind of the failure that caused the retry.",
    ["kind"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "sessions_worker_tokens",
    "Tokens of completed provider calls, by type: prompt or completion.",
    ["type"],
    registry=REGISTRY,
)
TURN_JOBS = Counter(
    "sessions_worker_turn_jobs",
    "Turn jobs ended, by result: answered (drained the pending turns), continued (handed "
    "over to a new job), busy (another job held the session's lease), session_gone, "
    "cancelled (shut down or past arq's backstop), failed (an exception; arq retries it).",
    ["result"],
    registry=REGISTRY,
)
LEASE_TAKEOVERS = Counter(
    "sessions_worker_lease_takeovers",
    "Session leases taken over from a worker whose lease had expired (it died, was paused "
    "or lost Redis for longer than the lease).",
    registry=REGISTRY,
)
CRON_RUNS = Counter(
    "sessions_worker_cron_runs",
    "Runs of the periodic jobs (sweep, retention) by result: ok or failed.",
    ["job", "result"],
    registry=REGISTRY,
)
CRON_SECONDS = Histogram(
    "sessions_worker_cron_duration_seconds",
    "Duration of the periodic jobs.",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
    registry=REGISTRY,
)
CRON_LAST_SUCCESS = Gauge(
    "sessions_worker_cron_last_success_timestamp_seconds",
    "Unix time of the last successful run of a periodic job in this worker.",
    ["job"],
    registry=REGISTRY,
)
SWEEP_SESSIONS = Counter(
    "sessions_worker_sweep_sessions",
    "Index entries the expiry sweep handled, by result: swept (expired and settled), alive "
    "(past its deadline, still there), gone (settled by someone else), repaired (Cluster: an "
    "entry of a session gone, removed by the repair pass).",
    ["result"],
    registry=REGISTRY,
)
WATCHDOG_SESSIONS = Counter(
    "sessions_worker_watchdog_sessions",
    "Registered sessions the watchdog looked at, by result: rescued (pending turns, no live "
    "lease: handed to a new job), settled (no pending turn left), failed.",
    ["result"],
    registry=REGISTRY,
)
RETENTION_SESSIONS = Counter(
    "sessions_worker_retention_sessions",
    "Sessions the retention rules handled, by outcome (deleted, skipped-changed, "
    "skipped-gone, failed).",
    ["outcome"],
    registry=REGISTRY,
)

for _outcome in TURN_OUTCOMES:  # every outcome is a series from the start, at 0
    TURNS.labels(_outcome)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` from a thread of this process."""
    start_http_server(port, addr=addr, registry=REGISTRY)


def turn_ended(outcome: str, started: float | None = None) -> None:
    """Count a turn's end; ``started`` (a ``time.perf_counter()``) adds its duration."""
    TURNS.labels(outcome).inc()
    if started is not None:
        TURN_SECONDS.labels(outcome).observe(time.perf_counter() - started)


def turn_job_ended(result: str, job_try: int) -> None:
    """Count a turn job's result (its return value, or ``cancelled``/``failed``)."""
    if result.startswith("answered"):
        kind = "continued" if "continued" in result else "answered"
    elif result.startswith("busy"):
        kind = "busy"
    elif result.startswith("session gone"):
        kind = "session_gone"
    else:
        kind = result if result in {"cancelled", "failed"} else "other"
    TURN_JOBS.labels(kind).inc()


class MeteredProvider:
    """A provider whose calls are timed, counted and traced: latency by outcome, time to the
    first streamed chunk, tokens. Retries are counted from the provider's retry records
    (``RetryCounter``)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        on_delta: DeltaCallback | None = None,
    ) -> Completion:
        started = time.perf_counter()
        relay = on_delta
        stopped: list[BaseException] = []  # what the delta callback raised, stopping the call
        if on_delta is not None:
            first = True
            forward = on_delta

            async def relay(chunk: str) -> None:
                nonlocal first
                if first:
                    first = False
                    FIRST_TOKEN_SECONDS.observe(time.perf_counter() - started)
                try:
                    await forward(chunk)
                except BaseException as exc:
                    stopped.append(exc)
                    raise

        attributes = {"gen_ai.system": self.name, "gen_ai.request.model": model}
        with tracing.span("provider " + self.name, kind="client", attributes=attributes) as span:
            try:
                completion = await self.inner.complete(messages, model=model, on_delta=relay)
            except ProviderError as exc:
                PROVIDER_SECONDS.labels(exc.kind).observe(time.perf_counter() - started)
                tracing.set_attributes(span, **{"error.type": exc.kind})
                raise
            except BaseException as exc:
                # cancelled: stopped by the worker, from the delta callback (an abort, a delete,
                # a lost lease or a failed write) or by a cancel (the turn's deadline, a
                # shutdown); error: anything else, a defect (a provider raises ProviderError)
                cut = isinstance(exc, asyncio.CancelledError) or any(exc is e for e in stopped)
                outcome = "cancelled" if cut else "error"
                PROVIDER_SECONDS.labels(outcome).observe(time.perf_counter() - started)
                tracing.set_attributes(span, **{"error.type": outcome})
                raise
            PROVIDER_SECONDS.labels("ok").observe(time.perf_counter() - started)
            if completion.usage is not None:
                TOKENS.labels("prompt").inc(completion.usage.prompt_tokens)
                TOKENS.labels("completion").inc(completion.usage.completion_tokens)
                tracing.set_attributes(
                    span,
                    **{
                        "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
                        "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
                    },
                )
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()


class RetryCounter(logging.Filter):
    """Counts the provider's retry records (``attempt`` and ``kind`` in their ``extra``) as
    they are logged. The provider's logger lets warnings through whatever the log level (so
    every retry is counted); this filter then drops what the root logger's level would not
    print."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = getattr(record, "kind", None)
        if getattr(record, "attempt", None) is not None and isinstance(kind, str):
            PROVIDER_RETRIES.labels(kind).inc()
        return record.levelno >= logging.getLogger().getEffectiveLevel()


_RETRY_LOGGER = "workers.providers.openai"


def count_retries() -> None:
    """Attach the ``RetryCounter`` to the provider's logger (once)."""
    logger = logging.getLogger(_RETRY_LOGGER)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, RetryCounter) for f in logger.filters):
        logger.addFilter(RetryCounter())


count_retries()

CronJob = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def cron_job(job: str, run: CronJob) -> CronJob:
    """``run`` with its runs, duration and results counted (``job``: sweep, watchdog or
    retention)."""

    async def metered(ctx: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            summary = await run(ctx)
        except BaseException:
            CRON_RUNS.labels(job, "failed").inc()
            raise
        finally:
            CRON_SECONDS.labels(job).observe(time.perf_counter() - started)
        CRON_RUNS.labels(job, "ok").inc()
        CRON_LAST_SUCCESS.labels(job).set_to_current_time()
        record_summary(job, summary)
        return summary

    metered.__qualname__ = metered.__name__ = getattr(run, "__name__", job)
    return metered


def record_summary(job: str, summary: dict[str, Any]) -> None:
    if job == "sweep":
        for result in ("swept", "alive", "gone", "repaired"):
            SWEEP_SESSIONS.labels(result).inc(int(summary.get(result, 0)))
    elif job == "watchdog":
        for result, key in (("rescued", "rescued"), ("settled", "settled"), ("failed", "failures")):
            WATCHDOG_SESSIONS.labels(result).inc(int(summary.get(key, 0)))
    elif job == "retention":
        for outcome, count in summary.get("counts", {}).items():
            if outcome in {"deleted", "skipped-changed", "skipped-gone", "failed"} and count:
                RETENTION_SESSIONS.labels(outcome).inc(count)
