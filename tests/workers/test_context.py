"""Context budgeting and compaction decisions: pure, no Redis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.models import Event
from workers.context import (
    build_context,
    compaction_split,
    needs_compaction,
    next_event_id,
)
from workers.providers import Role
from workers.tokens import estimate_messages


def ev(i: int, kind: str, text: str) -> Event:
    return Event(id=f"{1000 + i}-0", timestamp="", type=kind, data={"content": text})


def conversation(n: int, size: int = 40) -> list[Event]:
    out = []
    for i in range(n):
        kind = "user.message" if i % 2 == 0 else "assistant.message"
        out.append(ev(i, kind, f"message {i} " + "x" * size))
    return out


def test_context_keeps_system_summary_and_newest_messages() -> None:
    events = [*conversation(20), ev(99, "session.idle", "")]
    ctx = build_context(
        system_message="Be brief.", summary="earlier stuff", events=events, budget_tokens=120
    )
    assert ctx.messages[0].role is Role.SYSTEM and ctx.messages[0].content == "Be brief."
    assert ctx.messages[1].content.startswith("Summary of earlier conversation: earlier stuff")
    assert ctx.messages[-1].content.startswith("message 19")
    assert ctx.tokens <= 120
    assert ctx.dropped > 0
    assert ctx.history_tokens > ctx.tokens


@given(st.integers(1, 60), st.integers(0, 400), st.integers(20, 2000))
def test_context_fits_budget_or_is_just_the_prompt(n: int, size: int, budget: int) -> None:
    events = conversation(n, size)
    ctx = build_context(system_message="", summary="", events=events, budget_tokens=budget)
    assert ctx.messages[-1].content == events[-1]["data"]["content"]
    assert ctx.tokens <= budget or len(ctx.messages) == 1
    assert ctx.tokens == estimate_messages(ctx.messages)
    # the kept messages are the newest ones, in order
    kept = [m.content for m in ctx.messages]
    assert kept == [e["data"]["content"] for e in events[len(events) - len(kept) :]]


def test_compaction_decisions() -> None:
    assert not needs_compaction(799, 1000, 0.8)
    assert needs_compaction(801, 1000, 0.8)
    events = conversation(10)
    assert compaction_split(events, 6) == events[3]["id"]
    assert compaction_split(events[:6], 6) is None


def test_next_event_id() -> None:
    assert next_event_id("5-0") == "5-1"
    assert next_event_id("17-41") == "17-42"
