"""What every queued job runs inside: its log context, its span, and for turn jobs the count of
their results.

A job enqueued by ``workers.queue`` carries two optional keyword arguments besides its own:
``request_id`` (of the request, or job, that enqueued it) and ``trace`` (W3C trace context).
``with_context`` takes them off before the job function runs, binds ``request_id``, ``tenant``,
``session`` and (for a turn) ``message`` for every log line the job writes, and runs the job in a
span whose parent is the enqueueing request's. Jobs queued before these arguments existed carry
neither and run the same way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from service import tracing
from service.logging import bind_request, clear_request
from workers import metrics

Job = Callable[..., Coroutine[Any, Any, Any]]


def with_context(name: str, job: Job, fields: tuple[str, ...]) -> Job:
    """``job`` run with its context; ``fields`` name its leading arguments in log lines
    (``("tenant", "session", "message")``)."""

    @functools.wraps(job)
    async def run(
        ctx: dict[str, Any],
        *args: Any,
        request_id: str | None = None,
        trace: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        clear_request()
        values = {f: str(a) for f, a in zip(fields, args, strict=False)}
        if request_id is not None:
            values["request_id"] = request_id
        bind_request(**values)
        job_try = int(ctx.get("job_try") or 1)
        attributes = {"messaging.message.id": ctx.get("job_id"), "job.try": job_try}
        try:
            with tracing.span(
                "job " + name, kind="consumer", parent=trace, attributes=attributes
            ) as span:
                tracing.set_attributes(span, session=values.get("session"))
                return await _counted(name, job, job_try, ctx, args, kwargs)
        finally:
            clear_request()

    return run


async def _counted(
    name: str, job: Job, job_try: int, ctx: dict[str, Any], args: Any, kwargs: Any
) -> Any:
    if name != "run_turn":
        return await job(ctx, *args, **kwargs)
    try:
        result = await job(ctx, *args, **kwargs)
    except asyncio.CancelledError:
        metrics.turn_job_ended("cancelled", job_try)
        raise
    except Exception:
        metrics.turn_job_ended("failed", job_try)
        raise
    metrics.turn_job_ended(str(result), job_try)
    return result
