"""Background jobs a turn may call for: the session title and compaction of old context."""

from __future__ import annotations

from typing import Any

from service.errors import Conflict, ProviderError, SessionNotFound
from service.logging import get_logger
from service.models import Event, EventType, NewEvent, datetime_to_ms
from service.runtime import Runtime
from workers.context import ROLE_OF, history_messages
from workers.providers import ChatMessage, Provider, Role
from workers.providers.dev import SUMMARY_PREFIX
from workers.tokens import estimate_messages, estimate_tokens

log = get_logger("workers.background")
TITLE_PROMPT = "Write a short title (at most six words) for this conversation."
SUMMARIZE_PROMPT = (
    "Summarize the conversation so far for your own later use: keep facts, decisions, names and "
    "open questions; drop pleasantries. Include the earlier summary if one is given."
)


async def set_title(
    ctx: dict[str, Any], tenant: str, session_id: str, incarnation: str | int | None = None
) -> str:
    """arq job: after the first exchange, set the session's summary (its title), unless the user
    set one meanwhile (the write is conditional, in the same script) or the session is another
    incarnation of its id (``incarnation``: the ``inc`` of the session that asked, or its
    ``created`` ms; an int, from a job of an earlier version, is always its ``created`` ms)."""
    runtime: Runtime = ctx["runtime"]
    provider: Provider = ctx["provider"]
    store = runtime.store.tenant(tenant)
    try:
        info = await store.get(session_id)
        created = str(datetime_to_ms(info.created_at))
        inc = await store.get_meta_field(session_id, "inc") or ""
        names = {created} if isinstance(incarnation, int) else {inc or created}
        if incarnation is not None and str(incarnation) not in names:
            return "session gone"
        if info.summary:
            return "has a title"
        events = await store.read_events(session_id, limit=20)
        prompt = [
            ChatMessage(role=Role.SYSTEM, content=TITLE_PROMPT),
            *history_messages(events)[:2],
        ]
        completion = await provider.complete(prompt, model=info.model)
        title = " ".join(completion.content.split())[:80].strip("\"' ") or "New conversation"
        try:
            await store.update(
                session_id, summary=title, only_if={"summary": "", "created": created, "inc": inc}
            )
        except Conflict:
            return "has a title"  # set (or the session re-created) while the model answered
        await store.append(
            session_id, [NewEvent(type=EventType.SESSION_TITLE_CHANGED, data={"title": title})]
        )
    except SessionNotFound:
        return "session gone"
    except ProviderError as exc:
        log.warning("title.provider_error", tenant=tenant, session=session_id, kind=exc.kind)
        return "provider error"
    return "titled"


async def compact_session(
    ctx: dict[str, Any],
    tenant: str,
    session_id: str,
    through: str,
    *,
    transcript_tokens: int | None = None,
) -> str:
    """arq job: fold the messages up to ``through`` into the compaction summary.

    Nothing is deleted: the full history stays readable and exportable; later turns read the
    summary plus the events after ``compacted_through``. With ``transcript_tokens`` (a turn
    whose prompt passed the window) only the newest messages up to ``through`` that fit that
    estimate beside the earlier summary are summarized."""
    runtime: Runtime = ctx["runtime"]
    provider: Provider = ctx["provider"]
    store = runtime.store.tenant(tenant)
    try:
        info = await store.get(session_id)
        if info.compacted_through and _id_key(info.compacted_through) >= _id_key(through):
            return "already compacted"
        previous = await store.get_meta_field(session_id, "compaction_summary") or ""
        events = [
            ev
            async for ev in store.iter_events(session_id, after=info.compacted_through or None)
            if _id_key(ev["id"]) <= _id_key(through)
        ]
        if transcript_tokens is not None:
            events = newest_within(events, transcript_tokens - estimate_tokens(previous))
        folded = history_messages(events)
        before = estimate_messages(folded)
        await store.append(
            session_id,
            [
                NewEvent(
                    type=EventType.SESSION_COMPACTION_START,
                    data={"through": through, "messages": len(folded), "tokens": before},
                )
            ],
        )
        prompt = [ChatMessage(role=Role.SYSTEM, content=SUMMARIZE_PROMPT)]
        if previous:
            prompt.append(ChatMessage(role=Role.SYSTEM, content=f"{SUMMARY_PREFIX} {previous}"))
        transcript = "\n".join(
            f"{ROLE_OF[ev['type']].value}: {ev['data'].get('content', '')}"
            for ev in events
            if ev["type"] in ROLE_OF
        )
        prompt.append(ChatMessage(role=Role.USER, content=transcript))
        completion = await provider.complete(prompt, model=info.model)
        summary = completion.content.strip()
        try:  # a later point another job compacted to meanwhile stays: never moved back
            await store.update(
                session_id,
                extra={"compaction_summary": summary, "compacted_through": through},
                only_if={"compacted_through": info.compacted_through or ""},
            )
        except Conflict:
            return "superseded by another compaction"
        await store.append(
            session_id,
            [
                NewEvent(
                    type=EventType.SESSION_COMPACTION_COMPLETE,
                    data={
                        "through": through,
                        "summary": summary,
                        "tokens_before": before,
                        "tokens_after": estimate_messages(
                            [ChatMessage(role=Role.SYSTEM, content=summary)]
                        ),
                    },
                )
            ],
        )
    except SessionNotFound:
        return "session gone"
    except ProviderError as exc:
        log.warning("compaction.provider_error", tenant=tenant, session=session_id, kind=exc.kind)
        return "provider error"
    return "compacted"


def newest_within(events: list[Event], tokens: int) -> list[Event]:
    """The newest message events whose estimate fits ``tokens`` (at least the newest one)."""
    kept: list[Event] = []
    used = 0
    for ev in reversed(events):
        if ev["type"] not in ROLE_OF:
            continue
        cost = estimate_messages(history_messages([ev]))
        if kept and used + cost > tokens:
            break
        kept.append(ev)
        used += cost
    kept.reverse()
    return kept


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)
