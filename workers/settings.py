"""The arq worker: functions, start-up and shut-down, built from our ``Settings``.

The queue lives on the queue Redis (``SESSIONS_QUEUE_REDIS_URL``), which must be a standalone or
Sentinel-fronted server: arq's enqueue touches several keys at once and cannot run on a Cluster.
Session data may be on a Cluster all the same (``SESSIONS_REDIS_CLUSTER``).

Health: every worker writes arq's health record under a key of its own host name (the pod name
on Kubernetes) every few seconds; ``sessionctl worker --check`` reads it for a liveness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from arq import cron, func
from arq.worker import Worker, async_check_health
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.config import Settings
from service.errors import ServiceError
from service.logging import get_logger
from service.runtime import Runtime, build_runtime
from workers import background, cron_jobs, metrics, queue, turns, watchdog
from workers.jobs import with_context
from workers.providers import build_provider

log = get_logger("workers")
HEALTH_INTERVAL_S = 5
QUEUE_RETRY_S = 0.5  # pause after a poll that could not reach the queue Redis
MIN_WAKE_WAIT_S = 0.01
# what a queue Redis that is gone, restarting or demoted to a replica in a failover answers
QUEUE_OUTAGE = (RedisConnectionError, RedisTimeoutError, WatchError, ReadOnlyError, OSError)
CHASE_POLLS = 4  # quick polls after a wake-up that started no job, CHASE_PAUSE_S apart
CHASE_PAUSE_S = 0.005


class QueueTolerantWorker(Worker):
    """arq's worker, kept alive through a queue Redis outage: arq lets a failed poll end the
    process, and every worker would die of one restart of the queue Redis. A poll that fails
    to reach Redis is logged and tried again after a pause; turns left meanwhile are handed on
    by the watchdog once the queue is back.

    A connection lost while arq watches a job's in-progress key surfaces as redis-py's
    ``WatchError``; it is an outage like the others. arq takes a job slot before that check and
    gives it back only on the paths it expects, so ``start_jobs`` returns the slot itself when
    Redis fails there: without that every outage would cost a slot, until none were left.

    Between polls the worker waits on the queue's wake-up list (``QueueNames.wake``, one entry per
    enqueued job) for at most ``wake_wait_s``, in place of arq's fixed sleep: a job starts as
    soon as it is queued, and the wait is also the poll of jobs nobody announced (arq's own
    retries and cron jobs; Redis ends an idle wait on its own timer, 0.1 s at its default hz).
    A wake-up that finds no job due (the enqueuing host's clock runs ahead of this one's, or
    another worker took the job) is followed by a few quick polls. A worker with no free slot
    leaves the wake-ups to the others and polls again as soon as one of its jobs ends.

    SIGTERM (an orchestrator stopping the worker) drains: the worker takes no new job, sets
    ``stopping`` (the turn jobs see it in their ``ctx`` and hand their session's next turn to
    another worker once the current one is answered) and gives its running jobs ``drain_s`` to
    end, so a rollout does not pay the provider twice for the turns in flight. Then, or at
    once on SIGINT, a second SIGTERM or ``drain_s`` 0, arq's stop cancels what still runs, and
    each cancelled turn is handed over (``workers.turns``)."""

    def __init__(
        self, *args: Any, wake_wait_s: float = 0.5, drain_s: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, poll_delay=0, **kwargs)
        self.wake_key = queue.wake_key(self.queue_name)
        self.wake_wait_s = wake_wait_s
        self.drain_s = drain_s
        self.stopping = asyncio.Event()
        self.ctx["stopping"] = self.stopping
        self._slot_freed = asyncio.Event()
        self._started = 0  # jobs this worker started (arq's own count drops as tasks are reaped)
        self._drain: asyncio.Task[None] | None = None

    def _running(self) -> list[asyncio.Task[Any]]:
        return [t for t in self.tasks.values() if not t.done()]

    def handle_sig(self, signum: signal.Signals) -> None:
        running = len(self._running())
        if signum == signal.SIGTERM and self.drain_s > 0 and running and not self.stopping.is_set():
            self.stopping.set()
            self.allow_pick_jobs = False
            log.info("worker.draining", running=running, drain_s=self.drain_s)
            self._drain = self.loop.create_task(self._stop_when_drained(signum))
            return
        self.stopping.set()
        if self._drain is not None:  # a second signal cuts the drain short
            if self._drain.done():
                return  # the drain ended and stopped the worker already
            self._drain.cancel()
        super().handle_sig(signum)

    async def _stop_when_drained(self, signum: signal.Signals) -> None:
        deadline = self.loop.time() + self.drain_s
        # a job being started as the signal came joins the set on a later pass
        while (running := self._running()) and (left := deadline - self.loop.time()) > 0:
            await asyncio.wait(running, timeout=left)
        log.info("worker.drained", handed_over=len(self._running()))
        Worker.handle_sig(self, signum)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def _poll_iteration(self) -> None:
        try:
            woken = await self._await_work()
            started = self._started
            await super()._poll_iteration()
            for _ in range(CHASE_POLLS if woken else 0):
                if self._started != started:
                    break
                await asyncio.sleep(CHASE_PAUSE_S)
                await super()._poll_iteration()
        except QUEUE_OUTAGE as exc:
            log.warning("worker.queue_unavailable", error=str(exc), pause_s=QUEUE_RETRY_S)
            if isinstance(exc, ReadOnlyError):
                # a failover made the server a replica: connect afresh (a name may now resolve
                # to the new primary) rather than ask the same replica again
                with contextlib.suppress(Exception):
                    await self.pool.connection_pool.disconnect()
            await asyncio.sleep(QUEUE_RETRY_S)

    async def _await_work(self) -> bool:
        """Until a job is announced (True) or a slot frees, for at most ``wake_wait_s``."""
        if self.job_counter < self.max_jobs and self.allow_pick_jobs:
            # seconds with a fraction; Redis 6.2 takes 0.001 as 0, which blocks for good
            wait = f"{max(self.wake_wait_s, MIN_WAKE_WAIT_S):.3f}"
            try:
                reply = await self.pool.execute_command("BLPOP", self.wake_key, wait)  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                if not str(exc).startswith("UNBLOCKED"):
                    raise
                # the server ended the wait itself (its primary was demoted in a failover):
                # poll, which meets the failover as every other command does
                return False
            return reply is not None
        self._slot_freed.clear()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancel (the worker's
        # stop) that comes as the slot frees, and the worker would poll on for good
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.wake_wait_s):
                await self._slot_freed.wait()
        return False

    async def close(self, why: signal.Signals = signal.SIGUSR1) -> None:
        """arq's close, except that a queue Redis that is down or read-only as the worker stops
        costs only the delete of its health record (which expires by itself): arq's own close
        stops there, with an uncaught error, and never closes the provider or connections.
        ``why``: the signal its log line names, for a process that handles signals itself."""
        if not self._handle_signals:
            self.stopping.set()
            Worker.handle_sig(self, why)  # no drain: a process that stops it has its own plan
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values())
        try:
            await self.pool.delete(self.health_check_key)
        except QUEUE_OUTAGE as exc:
            log.warning("worker.health_record_left", error=str(exc))
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            if not self.allow_pick_jobs:  # draining: the rest of the batch is another's
                break
            key = job_id.decode()
            running = key in self.tasks  # the queue lists jobs until they end
            try:
                await super().start_jobs([job_id])
                self._started += not running and key in self.tasks
            except QUEUE_OUTAGE:
                # arq acquired the slot and counted the job before the call that failed
                self.job_counter -= 1
                self.sem.release()
                raise


def functions(settings: Settings) -> list[Any]:
    timeout = turns.job_backstop_seconds(settings.job_timeout_seconds)
    turn = with_context(queue.RUN_TURN, turns.run_turn, ("tenant", "session", "message"))
    title = with_context(queue.SET_TITLE, background.set_title, ("tenant", "session"))
    compact = with_context(queue.COMPACT, background.compact_session, ("tenant", "session"))
    return [
        func(turn, name=queue.RUN_TURN, timeout=timeout, max_tries=5, keep_result=60),
        func(title, name=queue.SET_TITLE, timeout=timeout, max_tries=3),
        func(compact, name=queue.COMPACT, timeout=timeout, max_tries=3),
    ]


def every(seconds: int) -> dict[str, set[int]]:
    """arq cron fields for "every ``seconds``" (whole minutes above 60, divisors of the hour)."""
    if seconds < 60:
        return {"second": set(range(0, 60, max(1, seconds)))}
    minutes = max(1, seconds // 60)
    return {"minute": set(range(0, 60, minutes)), "second": {0}}


def cron_jobs_for(settings: Settings) -> list[Any]:
    """The sweep (every ``sweep_interval_seconds``), the watchdog (every
    ``watchdog_interval_seconds``) and retention (every 15 minutes). arq runs each tick once
    across all workers; the jobs are safe to overlap and to interrupt.

    Their timeouts stay at the turn job's: arq retries a dead worker's jobs after the LARGEST
    function timeout + 10 s, so a long cron timeout would delay the recovery of every turn."""
    timeout = turns.job_backstop_seconds(settings.job_timeout_seconds)
    names = queue.QueueNames.of(settings)
    return [
        cron(
            metrics.cron_job("sweep", cron_jobs.sweep_expired_job),
            name=names.cron("sweep_expired"),
            timeout=timeout,
            **every(settings.sweep_interval_seconds),  # type: ignore[arg-type]
        ),
        cron(
            metrics.cron_job("watchdog", watchdog.watchdog_job),
            name=names.cron("watchdog"),
            timeout=timeout,
            **every(settings.watchdog_interval_seconds),  # type: ignore[arg-type]
        ),
        cron(
            metrics.cron_job("retention", cron_jobs.apply_retention_job),
            name=names.cron("apply_retention"),
            minute={0, 15, 30, 45},
            second={30},
            timeout=timeout,
        ),
    ]


def build_worker(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    burst: bool = False,
    **overrides: Any,
) -> Worker:
    """A worker for ``settings``; pass ``runtime`` to share connections (tests, ``dev``)."""
    owned = runtime is None
    names = queue.QueueNames.of(settings)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["runtime"] = runtime if runtime is not None else build_runtime(settings)
        ctx["provider"] = metrics.MeteredProvider(build_provider(settings))
        ctx["queue"] = queue.TurnQueue(ctx["redis"], names)
        with contextlib.suppress(ServiceError):  # Redis not up yet: turns retry and wait
            await ctx["runtime"].eviction.run(ctx["runtime"].redis, process="worker")
        log.info("worker.started", provider=settings.provider, queue=names.queue)

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "provider" in ctx:
            await ctx["provider"].aclose()
        if owned and "runtime" in ctx:
            await ctx["runtime"].close()

    options: dict[str, Any] = {
        "functions": functions(settings),
        "cron_jobs": cron_jobs_for(settings),
        "queue_name": names.queue,
        "redis_settings": queue.queue_redis_settings(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": turns.job_backstop_seconds(settings.job_timeout_seconds),
        "wake_wait_s": settings.worker_poll_delay_seconds,
        "drain_s": settings.worker_drain_seconds,
        "keep_result": 60,
        "burst": burst,
        "handle_signals": not burst,
        "health_check_interval": HEALTH_INTERVAL_S,
        "health_check_key": names.health(),
        "allow_abort_jobs": False,
    }
    options.update(overrides)
    quiet_routine_lines(names)
    return QueueTolerantWorker(**options)


class RoutineLines(logging.Filter):
    """Keeps arq's lines about routine work out of an INFO log: the start and end of each
    watchdog tick (every 2 s by default, two lines a tick per fleet, saying nothing when
    nothing is wrong: what the watchdog does it logs itself, and its metrics count its runs)
    and each write of the health record. They show at DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        routine = record.msg == "recording health: %s" or (
            record.msg in _JOB_LINES
            and isinstance(record.args, tuple)
            and len(record.args) > 1
            and record.args[1] in self.jobs
        )
        return not routine or logging.getLogger().isEnabledFor(logging.DEBUG)


_JOB_LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})  # arq's job start and end
ROUTINE = RoutineLines()


def quiet_routine_lines(names: queue.QueueNames) -> None:
    arq_log = logging.getLogger("arq.worker")
    ROUTINE.jobs.add(names.cron("watchdog"))
    if ROUTINE not in arq_log.filters:
        arq_log.addFilter(ROUTINE)


async def check_health(settings: Settings, host: str | None = None) -> bool:
    """True when this host's worker wrote its health record within the last interval."""
    names = queue.QueueNames.of(settings)
    code = await async_check_health(
        queue.queue_redis_settings(settings), names.health(host), names.queue
    )
    return code == 0
