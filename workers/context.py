"""What the model sees for a turn: pure functions, tested without Redis.

The context is the session's system message, the compaction summary (if the session was
compacted), then the most recent messages that fit the budget, always ending with the prompt
being answered. Events other than user and assistant messages are not sent to the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.models import Event
from workers.providers import ChatMessage, Role
from workers.providers.dev import SUMMARY_PREFIX
from workers.tokens import estimate_messages

ROLE_OF = {"user.message": Role.USER, "assistant.message": Role.ASSISTANT}


@dataclass(frozen=True, slots=True)
class Context:
    messages: list[ChatMessage]
    tokens: int  # estimate of ``messages``
    history_tokens: int  # estimate of every message read, before the budget cut
    dropped: int  # history messages left out to fit the budget


def history_messages(events: Sequence[Event]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for ev in events:
        role = ROLE_OF.get(ev["type"])
        if role is not None:
            out.append(ChatMessage(role=role, content=str(ev["data"].get("content", ""))))
    return out


def build_context(
    *,
    system_message: str,
    summary: str,
    events: Sequence[Event],
    budget_tokens: int,
) -> Context:
    """Fit the newest history into ``budget_tokens``; the last message (the prompt) is kept even
    when it alone is over budget, so a turn always has something to answer."""
    head: list[ChatMessage] = []
    if system_message:
        head.append(ChatMessage(role=Role.SYSTEM, content=system_message))
    if summary:
        head.append(ChatMessage(role=Role.SYSTEM, content=f"{SUMMARY_PREFIX} {summary}"))
    history = history_messages(events)
    history_tokens = estimate_messages(history)
    kept: list[ChatMessage] = []
    used = estimate_messages(head)
    for message in reversed(history):
        cost = estimate_messages([message])
        if kept and used + cost > budget_tokens:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    messages = head + kept
    return Context(messages, estimate_messages(messages), history_tokens, len(history) - len(kept))


def needs_compaction(history_tokens: int, window_tokens: int, threshold: float) -> bool:
    """Compact once the history since the last compaction passes ``threshold`` of the window."""
    return history_tokens > window_tokens * threshold


def compaction_split(events: Sequence[Event], keep_messages: int) -> str | None:
    """The id of the last message to fold into the summary, keeping the newest ``keep_messages``
    messages verbatim; None when there is nothing old enough to fold."""
    ids = [ev["id"] for ev in events if ev["type"] in ROLE_OF]
    if len(ids) <= keep_messages:
        return None
    return ids[len(ids) - keep_messages - 1]


def next_event_id(event_id: str) -> str:
    """The smallest stream id after ``event_id`` (an exclusive bound that includes it)."""
    ms, _, seq = event_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
