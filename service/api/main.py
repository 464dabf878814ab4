"""The FastAPI app: built from settings, with the runtime (Redis, store, tenants) and the turn
queue created at start-up unless they are handed in (as the dev runner and tests do).

Run it with ``sessionctl serve``, or ``uvicorn service.api.main:app --factory``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import params, problems
from service.api.deps import ApiState
from service.api.middleware import RequestBody, RequestContext
from service.api.proxy import ForwardedClient
from service.api.routes import (
    bookmarks,
    events,
    export,
    health,
    items,
    lifecycle,
    messages,
    sessions,
    tenants,
)
from service.api.shutdown import end_streams_on_signals
from service.config import Settings
from service.errors import ServiceError
from service.logging import configure_logging
from service.metrics import Metrics
from service.runtime import Runtime, build_runtime, settle_heap
from service.tracing import configure_tracing
from workers.queue import TurnQueue

BODY_HEADROOM = 64 * 1024  # JSON framing and other fields around the largest message


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    queue: TurnQueue | None = None,
) -> FastAPI:
    settings = settings or (runtime.settings if runtime is not None else Settings())
    state = ApiState(settings=settings, metrics=Metrics())
    if runtime is not None and queue is not None:
        state.attach(runtime, queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.runtime is not None:  # both handed in: theirs to close
            yield
            state.metrics.close()
            return
        rt = runtime if runtime is not None else build_runtime(settings)
        q = queue
        try:
            if q is None:
                q = await TurnQueue.connect(settings)
            state.attach(rt, q)
            with contextlib.suppress(ServiceError):  # Redis not up yet: /readyz checks again
                await rt.eviction.run(rt.redis, process="api")
            yield
        finally:
            state.runtime = state.queue = state.limits = None
            state.metrics.close()
            if queue is None and q is not None:
                await q.close()
            if runtime is None:
                await rt.close()

    app = FastAPI(
        title="Redis sessions",
        summary="Multi-tenant session service for AI-assistant conversations.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.api = state
    problems.install(app)
    params.install(app)
    app.add_middleware(
        RequestBody,
        max_bytes=settings.max_message_bytes + BODY_HEADROOM,
        timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_middleware(RequestContext, metrics=state.metrics)
    app.add_middleware(
        ForwardedClient, hops=settings.proxy_hops, trusted=settings.forwarded_allow_ips
    )

    # Starlette tries routes in order: the most requested first.
    for router in (
        messages.router,
        items.router,
        events.router,
        sessions.router,
        health.router,
        bookmarks.router,
        export.router,
        tenants.router,
        tenants.admin,
        lifecycle.router,
    ):
        app.include_router(router, responses=problems.ERROR_RESPONSES)
    return app


def app() -> FastAPI:
    """The uvicorn factory: settings from the environment, logging configured, then the app."""
    settings = Settings()
    configure_logging(settings)
    configure_tracing("redis-sessions-api")
    app = create_app(settings)
    end_streams_on_signals()
    settle_heap()
    return app
