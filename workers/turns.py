"""The turn job: one user message in, exactly one reply (or error) out, in order per session.

Ordering: a session's pending turns are a list in Redis (appended with the user message, in one
script). The job for any of them takes the session's lease and answers the oldest pending turn,
then the next, until none is left; a job that finds the lease taken leaves, because the holder
will drain the list, and the holder looks again after letting go so nothing is stranded.

A draining worker (SIGTERM, ``workers.settings``) lets its jobs answer the turn at hand, then
hand the session's next turn to a continuation job, which another worker runs.

Deadlines: one turn may run for ``job_timeout_seconds`` (the turn deadline), enforced here with
``asyncio.timeout``, so the job is never cancelled in the middle of its own hand-over: a turn past
its deadline is handed to a continuation job (counted as a cut-off; past ``MAX_CUT_OFF`` of them
the turn ends with a timeout error) while this job still runs normally. A job starts another turn
only within the first ``HAND_OVER_SHARE`` of the deadline, then lets go and enqueues a
continuation, which drains on. arq's own job timeout (``job_backstop_seconds``) lies beyond the
longest such job and is only a backstop.

Exactly once: the reply is appended by ``complete_turn``, which pops the turn in the same script
and refuses if the turn is no longer the oldest pending one, or if this job's lease was taken
over (``workers.lease``). A worker killed mid-turn leaves the turn pending and its lease expiring;
the watchdog (``workers.watchdog``) then hands the turn to a new job, which answers it once. An
abort drops the pending turns, so a running turn's progress and reply are refused and the turn
ends quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from service.config import Settings
from service.errors import ProviderError, SessionNotFound, StoreUnavailable
from service.logging import bind_request, get_logger, request_id, unbind_request
from service.models import Event, EventType, NewEvent, SessionInfo, datetime_to_ms
from service.runtime import Runtime
from service.store import TenantStore
from workers import metrics
from workers.budget import turn_budget
from workers.context import (
    Context,
    build_context,
    compaction_split,
    needs_compaction,
    next_event_id,
)
from workers.lease import LeaseLost, SessionLease
from workers.overflow import complete_fitting, fitted_counters
from workers.queue import TurnQueue

log = get_logger("workers.turns")
CONTEXT_ITEMS = 400  # newest history items (messages, errors, ...) read for one turn's context
MAX_CUT_OFF = 3  # deadlines one turn may pass before it fails
HAND_OVER_SHARE = 0.25  # share of the turn deadline after which a job starts no further turn
JOB_GRACE_S = 10.0  # arq's backstop beyond the longest job this module runs


def job_backstop_seconds(turn_deadline_s: float) -> float:
    """arq's timeout for a turn job: a job starts a turn within ``HAND_OVER_SHARE`` of the
    deadline, the turn runs to the deadline at most, then the hand-over's few writes follow."""
    return turn_deadline_s * (1 + HAND_OVER_SHARE) + JOB_GRACE_S


KEEP_MESSAGES = 6  # messages compaction keeps verbatim
STORE_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # pauses before a job tries again after Redis failed


class Aborted(Exception):
    """The turn is no longer pending (aborted, or answered by another try)."""


async def run_turn(
    ctx: dict[str, Any], tenant: str, session_id: str, message_id: str, attempt: int = 0
) -> str:
    """arq job: answer the session's pending turns, oldest first. ``message_id`` names the turn
    that enqueued this job (for logs and the job id); it may be answered by another job.
    ``attempt`` counts the turn deadlines already passed while answering it.

    Redis failing (a timeout, a reset, a failover) is retried here with growing pauses; should
    it outlast them, the job ends and the watchdog hands the turn to a new one later."""
    runtime: Runtime = ctx["runtime"]
    store = runtime.store.tenant(tenant)
    lease = SessionLease(store, session_id)
    bound = log.bind(tenant=tenant, session=session_id, turn=message_id)
    for pause in (*STORE_RETRY_S, None):
        try:
            return await _drain(ctx, store, session_id, lease, message_id, attempt)
        except SessionNotFound:
            return "session gone"
        except LeaseLost:
            bound.warning("turn.lease_lost")
            return "lease lost to another worker"
        except StoreUnavailable as exc:
            if pause is None:
                bound.error("turn.store_unavailable", error=exc.detail, action="left to watchdog")
                return "store unavailable: left to the watchdog"
            bound.warning("turn.store_retry", error=exc.detail, pause_s=pause)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


async def _drain(
    ctx: dict[str, Any],
    store: TenantStore,
    session_id: str,
    lease: SessionLease,
    message_id: str,
    attempt: int,
) -> str:
    """One pass of ``run_turn``: hold the lease and answer turns until none is pending, or hand
    the rest over to a continuation job."""
    queue: TurnQueue = ctx["queue"]
    deadline_s = ctx["settings"].job_timeout_seconds
    hand_over_at = time.monotonic() + deadline_s * HAND_OVER_SHARE
    stopping: asyncio.Event = ctx.get("stopping") or asyncio.Event()  # the worker drains
    answered = 0
    current: str | None = None
    own_request = request_id()
    try:
        while True:
            next_turn, tries = None, 0
            async with lease.hold() as held:
                if not held:
                    if not answered:  # the job answering the session will answer this turn
                        log.info("turn.job_busy")
                    return f"busy (answered {answered})"
                while pending := await store.pending_turns(session_id):
                    if answered and (time.monotonic() > hand_over_at or stopping.is_set()):
                        next_turn = pending[0]
                        break
                    current = pending[0]
                    own_turn(current, message_id, own_request)
                    if attempt >= MAX_CUT_OFF and current == message_id:
                        await give_up(store, session_id, current, deadline_s, lease.token)
                        metrics.turn_ended("timed_out")
                    else:
                        try:
                            async with (
                                lease.fenced(),
                                asyncio.timeout(deadline_s) as turn_deadline,
                            ):
                                await answer(ctx, store, session_id, current, lease.token)
                        except TimeoutError:
                            if not turn_deadline.expired():
                                raise
                            next_turn = current
                            tries = attempt + 1 if current == message_id else 1
                            metrics.turn_ended("deadline")
                            log.warning(
                                "turn.deadline",
                                tenant=store.tenant_id,
                                session=session_id,
                                turn=current,
                                tries=tries,
                            )
                            break
                    answered += 1
                    current = None
            if next_turn is not None:  # enqueued after the lease is free, so it cannot miss it
                own_turn(next_turn, message_id, own_request)  # its job: that turn's ids only
                await queue.enqueue_continuation(store.tenant_id, session_id, next_turn, tries)
                return f"answered {answered}, continued at {next_turn}"
            if not await store.pending_turns(session_id):
                return f"answered {answered}"
    except asyncio.CancelledError:
        # The worker is shutting down (or arq's backstop fired); the lease was let go on the
        # way out. Hand the turn on to a new job at once, which starts it over; a shutdown is no
        # cut-off, so the turn's count of passed deadlines stays. Should this write fail, the
        # watchdog hands the turn on once the lease has expired.
        if current is not None:
            tries = attempt if current == message_id else 0
            with contextlib.suppress(Exception):
                await queue.enqueue_continuation(store.tenant_id, session_id, current, tries)
        raise


def own_turn(turn: str, message_id: str, own_request: str | None) -> None:
    """Bind the log context to ``turn``: a job answers every turn pending in its session, and
    one queued by another request (a later send, an earlier job's) must not carry this job's
    message or request id (``own_request``). That request's id is not known here, so its
    lines carry none; its own job logged ``turn.job_busy`` with it and the message's id."""
    bind_request(message=turn)
    if turn != message_id:
        unbind_request("request_id")
    elif own_request is not None:
        bind_request(request_id=own_request)


async def give_up(
    store: TenantStore, session_id: str, turn_id: str, limit_s: float, lease: str
) -> None:
    """End a turn that no job could finish within its deadline, so the session moves on."""
    await store.complete_turn(
        session_id,
        turn_id,
        [
            NewEvent(
                type=EventType.SESSION_ERROR,
                data={
                    "errorType": "timeout",
                    "message": f"the turn did not finish within its deadline ({limit_s:g} s)",
                    "reply_to": turn_id,
                },
            ),
            NewEvent(type=EventType.ASSISTANT_TURN_END, data={"turnId": turn_id}),
            NewEvent(type=EventType.SESSION_IDLE),
        ],
        lease=lease,
    )


async def answer(
    ctx: dict[str, Any], store: TenantStore, session_id: str, turn_id: str, lease: str = ""
) -> None:
    """Run one turn: context, provider call (streamed when asked), final events. Every write
    names the ``lease`` token, so none lands once another worker has taken the session over."""
    settings: Settings = ctx["settings"]
    started = time.perf_counter()
    info = await store.get(session_id)
    budget = await turn_budget(ctx, store.tenant_id, info)
    context, events = await turn_context(
        store, info, turn_id, settings, budget.context_tokens(settings.compaction_threshold)
    )
    model = info.model or settings.default_model
    bound = log.bind(tenant=store.tenant_id, session=session_id, turn=turn_id)

    async def progress(*new: NewEvent) -> None:
        if await store.guarded_append(session_id, turn_id, new, lease=lease) is None:
            raise Aborted

    try:
        await progress(NewEvent(type=EventType.ASSISTANT_TURN_START, data={"turnId": turn_id}))
        on_delta = None
        if info.streaming:

            async def on_delta(chunk: str) -> None:
                await progress(
                    NewEvent(
                        type=EventType.ASSISTANT_MESSAGE_DELTA,
                        data={"deltaContent": chunk, "reply_to": turn_id},
                    )
                )

        fitted = await complete_fitting(ctx, store, info, events, context, budget, on_delta)
    except Aborted:
        bound.info("turn.aborted")
        metrics.turn_ended("aborted", started)
        return
    except SessionNotFound:
        bound.info("turn.session_gone")  # deleted (or expired) while the model answered
        metrics.turn_ended("session_gone", started)
        raise
    except ProviderError as exc:
        bound.warning("turn.provider_error", kind=exc.kind, detail=exc.detail)
        metrics.turn_ended("provider_error", started)
        await store.complete_turn(
            session_id,
            turn_id,
            [
                NewEvent(
                    type=EventType.SESSION_ERROR,
                    data={"errorType": exc.kind, "message": exc.detail, "reply_to": turn_id},
                ),
                NewEvent(type=EventType.ASSISTANT_TURN_END, data={"turnId": turn_id}),
                NewEvent(type=EventType.SESSION_IDLE),
            ],
            lease=lease,
        )
        return
    completion, usage = fitted.completion, fitted.completion.usage
    reply: dict[str, Any] = {"content": completion.content, "reply_to": turn_id, "model": model}
    if completion.finish_reason is not None:
        reply["finish_reason"] = completion.finish_reason
    counters = fitted_counters(fitted)
    if usage is not None:
        reply["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        counters |= {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
    done = await store.complete_turn(
        session_id,
        turn_id,
        [
            NewEvent(type=EventType.ASSISTANT_MESSAGE, data=reply),
            NewEvent(type=EventType.ASSISTANT_TURN_END, data={"turnId": turn_id}),
            NewEvent(type=EventType.SESSION_IDLE),
        ],
        counters,
        lease=lease,
    )
    if done is None:
        bound.info("turn.superseded")
        metrics.turn_ended("superseded", started)
        return
    bound.info("turn.done", ms=round((time.perf_counter() - started) * 1000, 1))
    metrics.turn_ended("answered", started)
    await _follow_ups(ctx, store, info, budget.real(context.history_tokens), events, budget.window)


async def turn_context(
    store: TenantStore,
    info: SessionInfo,
    turn_id: str,
    settings: Settings,
    budget_tokens: int | None = None,
) -> tuple[Context, list[Event]]:
    """What the model is sent for the turn of ``turn_id``: built from the durable history
    (messages, never live events such as deltas), so a streaming session's context is the same
    as a non-streaming one's. Also returns the history read (for the compaction decision)."""
    events = await store.read_events(
        info.session_id,
        after=info.compacted_through or None,
        before=next_event_id(turn_id),
        limit=CONTEXT_ITEMS,
        reverse=True,
    )
    events.reverse()
    context = build_context(
        system_message=info.system_message,
        summary=await store.get_meta_field(info.session_id, "compaction_summary") or "",
        events=events,
        budget_tokens=budget_tokens
        if budget_tokens is not None
        else int(settings.model_context_tokens * settings.compaction_threshold),
    )
    return context, events


async def _follow_ups(
    ctx: dict[str, Any],
    store: TenantStore,
    info: SessionInfo,
    history_tokens: int,
    events: list[Event],
    window_tokens: int,
) -> None:
    """Background work a finished turn may call for: a title, a compaction."""
    queue: TurnQueue = ctx["queue"]
    settings: Settings = ctx["settings"]
    if not info.summary:
        inc, created = await store.get_meta_fields(info.session_id, "inc", "created")
        if created == str(datetime_to_ms(info.created_at)):  # not made again since the turn
            await queue.enqueue_title(store.tenant_id, info.session_id, inc or created)
    if info.infinite and needs_compaction(
        history_tokens, window_tokens, settings.compaction_threshold
    ):
        through = compaction_split(events, KEEP_MESSAGES)
        if through is not None:
            await queue.enqueue_compaction(store.tenant_id, info.session_id, through)
