"""Operations: liveness, readiness (Redis answers) and Prometheus metrics. No key needed."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Response

from service.api.deps import QueueDep, RuntimeDep, StateDep
from service.api.schemas import Health
from service.connections import store_errors
from service.errors import StoreUnavailable
from service.metrics import QueueFigures

router = APIRouter(tags=["ops"])
QUEUE_FIGURES_TIMEOUT_S = 2.0


@router.get("/livez", response_model=Health)
async def livez() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(rt: RuntimeDep, queue: QueueDep) -> Health:
    """Ready when the data Redis and the queue Redis answer PING (503 problem otherwise)."""

    async def ping_queue() -> None:
        with store_errors("answer a ping on the queue"):
            await queue.pool.ping()

    await asyncio.gather(rt.store.ping(), ping_queue())
    return Health(status="ok")


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition text: the API's figures, and the queue's, read for this scrape
    (left out while the queue Redis does not answer)."""
    extra = []
    if state.queue is not None:
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout(QUEUE_FIGURES_TIMEOUT_S):
                depth, oldest = await state.queue.figures()
            extra.append(QueueFigures(depth, oldest).registry())
    body, content_type = state.metrics.render(*extra)
    return Response(body, media_type=content_type)
