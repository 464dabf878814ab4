"""The only module that knows arq: job names, deterministic job ids, the queue connection.

A turn's job id is ``turn:<tenant>:<session>:<message id>`` (after ``<prefix>:`` for a
non-default key prefix, see below): a retried request, or a second
enqueue of the same message, is refused instead of running twice.

Each deployment (each ``SESSIONS_KEY_PREFIX``) has a queue of its own, so deployments can share a
queue Redis: ``sessions:queue`` for the default prefix ``sess`` (the name it always had), else
``<prefix>:_queue``. arq keeps every job's record under one global prefix (``arq:job:<id>``), so a
deployment of another prefix also puts it in its job ids (``<prefix>:turn:...``) and cron names.

Enqueueing writes arq's own job record (serialized by arq's ``serialize_job``) and queue entry in
one Lua script: the same keys and checks as ``ArqRedis.enqueue_job``, which needs three round trips
(WATCH, EXISTS, MULTI/EXEC) for them; this is one, on every send.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from service import tracing
from service.config import Settings
from service.connections import LuaScript, close_redis, store_errors, use_lean_connections
from service.logging import request_id
from service.metrics import QueueFigures

DEFAULT_QUEUE = "sessions:queue"
RUN_TURN = "run_turn"
SET_TITLE = "set_title"
COMPACT = "compact_session"


def queue_redis_settings(settings: Settings) -> RedisSettings:
    """The queue Redis: ``queue_redis_url``; else the master behind ``redis_sentinels``; else the
    data Redis (which must then not be a Cluster)."""
    url = settings.queue_redis_url
    if url is None and settings.redis_sentinels:
        return RedisSettings(
            host=settings.sentinel_nodes(),
            sentinel=True,
            sentinel_master=settings.redis_sentinel_master,
            password=settings.password_for(None),
            conn_timeout=5,
            conn_retries=5,
        )
    url = url or settings.redis_url
    if url is None:
        raise ValueError("no queue Redis URL: set SESSIONS_QUEUE_REDIS_URL or SESSIONS_REDIS_URL")
    rs = RedisSettings.from_dsn(url)
    # arq takes the URL's user and password as written; redis-py (the data client) decodes
    # them, so a percent-encoded password works for both
    rs.username = unquote(rs.username) if rs.username else rs.username
    rs.password = unquote(rs.password) if rs.password else rs.password
    if rs.password is None:  # one the URL carries wins
        rs.password = settings.password_for(url)
    rs.conn_timeout = 5
    rs.conn_retries = 5
    return rs


@dataclass(frozen=True, slots=True)
class QueueNames:
    """A deployment's queue, the keys beside it, and the prefix of its job ids."""

    queue: str
    jobs: str  # prefix of job ids and cron names: '' for the default deployment

    @classmethod
    def of(cls, settings: Settings) -> QueueNames:
        prefix = settings.key_prefix
        if prefix == Settings.model_fields["key_prefix"].default:
            return cls(DEFAULT_QUEUE, "")
        return cls(f"{prefix}:_queue", f"{prefix}:")

    @property
    def wake(self) -> str:
        """Each enqueued job also pushes one wake-up here: an idle worker waits on this list
        (BLPOP) instead of sleeping out its poll delay, so a job starts as soon as it is queued.
        The list is capped and expires unread; a lost wake-up only means the job waits for the
        next poll."""
        return wake_key(self.queue)

    def health(self, host: str | None = None) -> str:
        """The key of arq's health record of the worker on ``host`` (default: this one)."""
        return f"{self.queue}:health-check:{host or socket.gethostname()}"

    def cron(self, name: str) -> str:
        """The name of a cron job: arq's job ids of its ticks start with it."""
        return self.jobs + name

    def turn_job(self, tenant: str, session_id: str, message_id: str) -> str:
        return f"{self.jobs}turn:{tenant}:{session_id}:{message_id}"


def wake_key(queue: str) -> str:
    """The wake-up list of the queue ``queue``."""
    return queue + ":wake"


WAKE_CAP = 100
WAKE_TTL_MS = 60_000

_ENQUEUE = f"""
-- KEYS: job key, result key, queue, wake-up list.  ARGV: job id, score (ms), expiry (ms),
-- serialized job.  Returns 1 when enqueued, 0 when a job of that id is queued, running or has
-- a kept result.
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('LPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], 0, {WAKE_CAP - 1})
redis.call('PEXPIRE', KEYS[4], {WAKE_TTL_MS})
return 1
"""


def job_context() -> dict[str, Any]:
    """A job's keyword arguments from the context that enqueues it: the request id (so the
    worker's log lines carry it) and the trace context, each only when there is one. Workers
    older than these arguments refuse such jobs: roll workers out before the API."""
    context: dict[str, Any] = {}
    if (rid := request_id()) is not None:
        context["request_id"] = rid
    if (trace := tracing.carrier()) is not None:
        context["trace"] = trace
    return context


class TurnQueue:
    """Enqueues work for the workers."""

    def __init__(self, pool: ArqRedis, names: QueueNames) -> None:
        self.pool = pool
        self.names = names
        self._enqueue_script = LuaScript(pool, _ENQUEUE)

    @classmethod
    async def connect(cls, settings: Settings) -> TurnQueue:
        names = QueueNames.of(settings)
        with store_errors("connect to the queue"):
            pool = await create_pool(queue_redis_settings(settings), default_queue_name=names.queue)
            await use_lean_connections(pool)
        return cls(pool, names)

    async def _enqueue(self, name: str, job_id: str, *args: Any) -> bool:
        """Queue ``name(*args)`` under ``job_id`` unless that job exists; True when queued.
        The job carries the request id and trace context of the enqueueing request or job as
        keyword arguments (``workers.jobs`` takes them off)."""
        now = timestamp_ms()
        with tracing.span("enqueue " + name, kind="producer") as current:
            tracing.set_attributes(current, **{"messaging.message.id": job_id})
            kwargs = job_context()
            job = serialize_job(name, args, kwargs, None, now, serializer=self.pool.job_serializer)
            with store_errors("enqueue a job"):
                done = await self._enqueue_script(
                    keys=[
                        job_key_prefix + job_id,
                        result_key_prefix + job_id,
                        self.names.queue,
                        self.names.wake,
                    ],
                    args=[job_id, now, expires_extra_ms, job],
                )
        return bool(done)

    async def enqueue_turn(self, tenant: str, session_id: str, message_id: str) -> bool:
        """Queue the turn job of ``message_id``; False when that job exists already."""
        return await self._enqueue(
            RUN_TURN,
            self.names.turn_job(tenant, session_id, message_id),
            tenant,
            session_id,
            message_id,
        )

    async def enqueue_continuation(
        self, tenant: str, session_id: str, message_id: str, attempt: int
    ) -> None:
        """A turn job for a session whose previous job handed over with turns still pending
        (``attempt`` > 0: that job was cut off by its timeout while answering this turn)."""
        job_id = f"{self.names.turn_job(tenant, session_id, message_id)}:more{attempt}"
        await self._enqueue(RUN_TURN, job_id, tenant, session_id, message_id, attempt)

    async def enqueue_rescue(
        self, tenant: str, session_id: str, message_id: str, at_ms: int
    ) -> None:
        """A turn job the watchdog hands a stranded session (``at_ms`` makes its id new)."""
        job_id = f"{self.names.turn_job(tenant, session_id, message_id)}:wd{at_ms}"
        await self._enqueue(RUN_TURN, job_id, tenant, session_id, message_id)

    async def enqueue_title(self, tenant: str, session_id: str, incarnation: str) -> None:
        """One title job per session incarnation (its ``inc``, or ``created`` ms for a session
        made before ``inc`` was kept) is in the id, so a session deleted and re-created under its
        id gets its own job while the earlier one's result is still kept."""
        job_id = f"{self.names.jobs}title:{tenant}:{session_id}:{incarnation}"
        await self._enqueue(SET_TITLE, job_id, tenant, session_id, incarnation)

    async def enqueue_compaction(self, tenant: str, session_id: str, through: str) -> None:
        await self._enqueue(
            COMPACT,
            f"{self.names.jobs}compact:{tenant}:{session_id}:{through}",
            tenant,
            session_id,
            through,
        )

    async def figures(self) -> QueueFigures:
        """Jobs waiting (queued, due, not running), jobs running, and the age in seconds of the
        oldest waiting job. A job deferred to later (the next cron tick, which arq queues ahead
        of its time; a retry's backoff) does not wait yet: counted, it kept the figure at 1 on
        an idle queue, and an autoscaler from scaling to zero. Running jobs stay in arq's queue
        until they end: those among the oldest ``FIGURES_SCAN`` are told apart by their
        in-progress key."""
        now = timestamp_ms()
        with store_errors("read the queue's figures"):
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.zcount(self.names.queue, "-inf", now)
                pipe.zrange(self.names.queue, 0, FIGURES_SCAN - 1, withscores=True)
                total, head = await pipe.execute()
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id, _ in head:
                    pipe.exists(in_progress_key_prefix + _text(job_id))
                running = await pipe.execute()
        waiting = [score for (_, score), busy in zip(head, running, strict=True) if not busy]
        due = [score for score in waiting if score <= now]
        busy = len(head) - len(waiting)
        oldest = (now - min(due)) / 1000 if due else 0.0
        return QueueFigures(waiting=int(total) - busy, running=busy, oldest_age_s=oldest)

    async def close(self) -> None:
        await close_redis(self.pool)


FIGURES_SCAN = 1000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
