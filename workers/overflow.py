"""A turn whose prompt passed the model's window: compact the session and try once more.

The token estimate can be wrong (a script it counts poorly, a model whose tokenizer differs), and
the provider then answers 400 ``context_length_exceeded``. That answer comes before any text, so
trying again repeats nothing. ``complete_fitting`` then:

1. learns the real size where the answer names it (``prompt_tokens`` of the prompt sent,
   ``context_window`` of the model), so the ratio of real to estimated tokens is known;
2. compacts the session: the messages older than the newest ``KEEP_MESSAGES`` of the turn's
   context are folded into the compaction summary (``compact_session``, the same job infinite
   sessions run; the transcript it summarizes is cut to what fits the window), so older context
   is summarized rather than lost;
3. builds the context again, from the new summary and the messages after it, within the window as
   now measured (half the failed prompt's estimate when the answer named no sizes), and calls the
   provider once more.

A second overflow ends the turn: ``ProviderError`` of kind ``context_length_exceeded`` that says
so, which the turn records as its ``session.error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.config import Settings
from service.errors import ProviderError
from service.logging import get_logger
from service.models import Event, SessionInfo
from service.store import TenantStore
from workers.background import compact_session
from workers.budget import (
    ESTIMATED,
    REPORTED,
    Budget,
    calibration_counters,
    calibration_ratio,
)
from workers.context import Context, build_context, compaction_split
from workers.providers import Completion, DeltaCallback, Provider, ProviderErrorKind

log = get_logger("workers.overflow")
OVERFLOW = ProviderErrorKind.CONTEXT_LENGTH_EXCEEDED.value
KEEP_MESSAGES = 6  # messages compaction keeps verbatim, as for infinite sessions
SHRINK = 0.5  # share of the failed prompt's estimate tried when the answer names no sizes


@dataclass(frozen=True, slots=True)
class Fitted:
    """What the provider answered, the context it answered, and any size the overflow taught:
    ``(reported, estimated)`` tokens of the prompt that did not fit."""

    completion: Completion
    context: Context
    learned: tuple[int, int] | None = None


async def complete_fitting(
    ctx: dict[str, Any],
    store: TenantStore,
    info: SessionInfo,
    events: Sequence[Event],
    context: Context,
    budget: Budget,
    on_delta: DeltaCallback | None,
) -> Fitted:
    """``provider.complete`` for a turn, compacting and trying once more on an overflow."""
    provider: Provider = ctx["provider"]
    settings: Settings = ctx["settings"]
    model = info.model or settings.default_model
    try:
        return Fitted(
            await provider.complete(context.messages, model=model, on_delta=on_delta), context
        )
    except ProviderError as exc:
        if exc.kind != OVERFLOW:
            raise
        first = exc
    learned, target = _measure(first, context, budget, settings.compaction_threshold)
    log.warning(
        "turn.context_overflow",
        tenant=store.tenant_id,
        session=info.session_id,
        estimated=context.tokens,
        reported=learned[0] if learned else None,
        retry_budget=target,
    )
    summary, events = await _compact(ctx, store, info, events, target)
    retry = build_context(
        system_message=info.system_message, summary=summary, events=events, budget_tokens=target
    )
    try:
        completion = await provider.complete(retry.messages, model=model, on_delta=on_delta)
    except ProviderError as exc:
        if exc.kind != OVERFLOW:
            raise
        raise ProviderError(
            "the conversation does not fit the model's context window, even after compaction: "
            f"{exc.detail}",
            kind=OVERFLOW,
            **exc.extra,
        ) from exc
    return Fitted(completion, retry, learned)


def fitted_counters(fitted: Fitted) -> dict[str, int]:
    """The calibration counters a completed turn adds: its reported usage against its estimate,
    plus the sizes its overflow named."""
    counters = calibration_counters(fitted.completion.usage, fitted.context.tokens)
    if fitted.learned is not None:
        reported, estimated = fitted.learned
        counters[REPORTED] = counters.get(REPORTED, 0) + reported
        counters[ESTIMATED] = counters.get(ESTIMATED, 0) + estimated
    return counters


def _measure(
    exc: ProviderError, context: Context, budget: Budget, threshold: float
) -> tuple[tuple[int, int] | None, int]:
    """What the overflow says of sizes, and the estimated tokens the second try may use."""
    reported = exc.extra.get("prompt_tokens")
    window = exc.extra.get("context_window")
    learned = None
    if isinstance(reported, int) and reported > 0 and context.tokens > 0:
        learned = (reported, context.tokens)
    if learned is None:
        return None, max(1, int(context.tokens * SHRINK))
    ratio = max(budget.ratio, calibration_ratio(*learned))
    real_window = (
        min(budget.window, window) if isinstance(window, int) and window > 0 else budget.window
    )
    measured = Budget(real_window, ratio).context_tokens(threshold)
    return learned, min(measured, int(context.tokens * threshold))


async def _compact(
    ctx: dict[str, Any],
    store: TenantStore,
    info: SessionInfo,
    events: Sequence[Event],
    budget_tokens: int,
) -> tuple[str, list[Event]]:
    """Fold the turn's older messages into the summary; the summary and the events after it."""
    through = compaction_split(events, KEEP_MESSAGES)
    if through is not None:
        await compact_session(
            ctx, store.tenant_id, info.session_id, through, transcript_tokens=budget_tokens
        )
    compacted = await store.get_meta_field(info.session_id, "compacted_through") or ""
    summary = await store.get_meta_field(info.session_id, "compaction_summary") or ""
    if compacted:
        events = [ev for ev in events if _order(ev["id"]) > _order(compacted)]
    return summary, list(events)


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)
