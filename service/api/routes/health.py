"""Operations: liveness, readiness (Redis answers) and Prometheus metrics. No key needed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Response
from redis.exceptions import RedisError

from service.api.deps import QueueDep, RuntimeDep, StateDep
from service.api.schemas import Health
from service.connections import require_primary, store_errors
from service.errors import StoreUnavailable
from service.metrics import ScrapeFigures, read_redis_figures

router = APIRouter(tags=["ops"])
SCRAPE_READ_TIMEOUT_S = 2.0
SCRAPE_READ_EVERY_S = 1.0
T = TypeVar("T")


@router.get("/livez", response_model=Health)
async def livez() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(rt: RuntimeDep, queue: QueueDep) -> Health:
    """Ready when the data Redis and the queue Redis answer PING and are primaries (not
    read-only replicas), and the data Redis will not evict session keys (``maxmemory-policy
    noeviction``, or ``SESSIONS_ALLOW_EVICTION``); a 503 problem otherwise."""

    async def data() -> None:
        await rt.store.ping()
        if not rt.settings.redis_cluster:  # a Cluster client sends writes to primaries itself
            await require_primary(rt.redis, "data")

    async def queue_redis() -> None:
        with store_errors("answer a ping on the queue"):
            await queue.pool.ping()
        await require_primary(queue.pool, "queue")

    # both checks run to their end: a plain gather returned at the first failure and left the
    # other running, unowned, to die later with a traceback outside the log format
    for outcome in await asyncio.gather(data(), queue_redis(), return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
    await rt.eviction.run(rt.redis, process="api")
    rt.eviction.refuse_unless_ready()
    return Health(status="ok")


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition text: the API's figures, then the queue's and the data Redis's,
    read for this scrape (each left out while its Redis does not answer in time). Scrapes
    within ``SCRAPE_READ_EVERY_S`` of a read reuse its figures, so frequent requests to this
    unauthenticated route cost Redis nothing more."""
    m = state.metrics
    now = time.monotonic()
    if m.scraped is None or now - m.scraped[0] >= SCRAPE_READ_EVERY_S:
        queue = redis = None
        if state.queue is not None and state.runtime is not None:
            queue, redis = await asyncio.gather(
                _in_time(state.queue.figures()), _in_time(read_redis_figures(state.runtime.redis))
            )
        m.scraped = (now, ScrapeFigures(queue, redis))
    body, content_type = m.render(m.scraped[1].registry())
    return Response(body, media_type=content_type)


async def _in_time(read: Awaitable[T]) -> T | None:
    try:
        async with asyncio.timeout(SCRAPE_READ_TIMEOUT_S):
            return await read
    except (TimeoutError, StoreUnavailable, RedisError, OSError):
        return None
