"""Operations: liveness, readiness (Redis answers) and Prometheus metrics. No key needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from service.api.deps import MetricsDep, QueueDep, RuntimeDep
from service.api.schemas import Health
from service.connections import store_errors

router = APIRouter(tags=["ops"])


@router.get("/livez", response_model=Health)
async def livez() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(rt: RuntimeDep, queue: QueueDep, m: MetricsDep) -> Health:
    """Ready when the data Redis and the queue Redis answer PING, and the data Redis will not
    evict session keys (``maxmemory-policy noeviction``, or ``SESSIONS_ALLOW_EVICTION``); a
    503 problem otherwise."""

    async def ping_queue() -> None:
        with store_errors("answer a ping on the queue"):
            await queue.pool.ping()

    await asyncio.gather(rt.store.ping(), ping_queue())
    await rt.eviction.run(rt.redis, process="api")
    m.eviction_unsafe.set(0 if not rt.eviction.unsafe else 1)
    rt.eviction.refuse_unless_ready()
    return Health(status="ok")


@router.get("/metrics", response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    """Prometheus exposition text."""
    body, content_type = m.render()
    return Response(body, media_type=content_type)
