"""Turns end to end with the real arq worker in this process and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.config import Settings
from service.keys import session_keys
from service.models import NewEvent, messages_from_events
from service.runtime import Runtime
from tests.providers.fake_openai import FakeOpenAI
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers.background import compact_session
from workers.context import needs_compaction
from workers.providers import build_provider
from workers.queue import TurnQueue
from workers.turns import turn_context


def types(events: list[dict[str, object]] | list) -> list[str]:  # type: ignore[type-arg]
    return [e["type"] for e in events]


async def test_turn_produces_one_reply_with_full_event_sequence(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("s1", model="dev-echo", system_message="You are terse.")
    await start_worker()
    first = await send(store, queue, "s1", "Let's plan a web app architecture")
    await wait_idle(store, "s1")
    second = await send(store, queue, "s1", "What database should we use?")
    events = await wait_idle(store, "s1")
    third = await send(store, queue, "s1", "What were we discussing?")
    events = await wait_idle(store, "s1")
    turn = [e for e in events if e["type"] not in ("session.title_changed",)]
    assert types(turn)[:6] == [
        "session.start",
        "user.message",
        "assistant.turn_start",
        "assistant.message",
        "assistant.turn_end",
        "session.idle",
    ]
    replies = [e for e in events if e["type"] == "assistant.message"]
    assert [r["data"]["reply_to"] for r in replies] == [first, second, third]
    recall = replies[-1]["data"]["content"]
    assert recall.startswith("We discussed:")
    assert "plan a web app" in recall and "database" in recall
    info = await store.get("s1")
    assert info.prompt_tokens > 0 and info.completion_tokens > 0
    # the first exchange gave the session a title
    for _ in range(100):
        info = await store.get("s1")
        if info.summary:
            break
        await asyncio.sleep(0.02)
    assert info.summary == "Let's plan a web app architecture"
    titles = [e for e in await store.live_events("s1") if e["type"] == "session.title_changed"]
    assert len(titles) == 1


async def test_streaming_deltas_join_to_the_reply(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("st", model="dev-echo", streaming=True)
    await start_worker()
    msg = await send(store, queue, "st", "stream this please")
    events = await wait_idle(store, "st")
    deltas = [e for e in events if e["type"] == "assistant.message_delta"]
    reply = next(e for e in events if e["type"] == "assistant.message")
    assert len(deltas) > 3
    assert "".join(d["data"]["deltaContent"] for d in deltas) == reply["data"]["content"]
    assert all(d["data"]["reply_to"] == msg for d in deltas)


async def test_idempotent_enqueue_runs_one_turn(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("once", model="dev-echo")
    res = await store.append(
        "once", [NewEvent(type="user.message", data={"content": "hi"})],
        idempotency_key="k", enqueue_turn=True,
    )  # fmt: skip
    again = await store.append(
        "once", [NewEvent(type="user.message", data={"content": "hi"})],
        idempotency_key="k", enqueue_turn=True,
    )  # fmt: skip
    assert again.duplicate
    for _ in range(3):
        await queue.enqueue_turn("acme", "once", res.event_ids[0])
    await start_worker()
    events = await wait_idle(store, "once")
    assert types(events).count("assistant.message") == 1
    assert types(events).count("user.message") == 1


async def test_abort_drops_pending_turns_and_running_stream(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("ab", model="dev-echo", streaming=True)
    slow = settings.model_copy(update={"dev_stream_delay_ms": 50})
    await start_worker(slow)
    await send(store, queue, "ab", "a long answer please " * 5)
    await send(store, queue, "ab", "and another")
    for _ in range(200):
        if "assistant.message_delta" in types(await store.live_events("ab")):
            break
        await asyncio.sleep(0.01)
    aborted = await store.abort_turns(
        "ab", [NewEvent(type="abort", data={"reason": "user"}), NewEvent(type="session.idle")]
    )
    assert aborted is not None
    await asyncio.sleep(0.5)
    events = await store.read_events("ab")
    assert "assistant.message" not in types(events)
    assert types(events)[-2:] == ["abort", "session.idle"] or "abort" in types(events)
    assert await store.pending_turns("ab") == []
    # the session stays usable
    await store.update("ab", extra={"streaming": 0})
    await send(store, queue, "ab", "after abort")
    events = await wait_idle(store, "ab")
    assert types(events).count("assistant.message") == 1


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("fail-500", "server_error"),
        ("garbage-json", "bad_response"),
        ("hang", "timeout"),
        ("auth-401", "auth"),
    ],
)
async def test_provider_failures_become_session_errors(
    runtime: Runtime,
    queue: TurnQueue,
    start_worker: WorkerFactory,
    settings: Settings,
    fake_openai: FakeOpenAI,
    model: str,
    kind: str,
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("f", model=model)
    openai = settings.model_copy(
        update={
            "provider": "openai",
            "openai_base_url": fake_openai.base_url,
            "provider_timeout_seconds": 1.0,
            "provider_max_retries": 1,
        }
    )
    await start_worker(openai)
    msg = await send(store, queue, "f", "hello")
    events = await wait_idle(store, "f", timeout=20)
    errors = [e for e in events if e["type"] == "session.error"]
    assert len(errors) == 1
    assert errors[0]["data"]["errorType"] == kind
    assert errors[0]["data"]["reply_to"] == msg
    assert "assistant.message" not in types(events)
    assert types(events)[-1] in ("session.idle", "session.title_changed")


async def test_openai_provider_happy_path_and_429_retry(
    runtime: Runtime,
    queue: TurnQueue,
    start_worker: WorkerFactory,
    settings: Settings,
    fake_openai: FakeOpenAI,
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("ok", model="fail-429-then-ok", streaming=True)
    await start_worker(
        settings.model_copy(update={"provider": "openai", "openai_base_url": fake_openai.base_url})
    )
    await send(store, queue, "ok", "hello there")
    events = await wait_idle(store, "ok", timeout=20)
    replies = [e for e in events if e["type"] == "assistant.message"]
    assert len(replies) == 1 and replies[0]["data"]["content"]
    assert "session.error" not in types(events)


async def test_infinite_session_compacts_and_keeps_everything(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    small = settings.model_copy(update={"model_context_tokens": 400, "compaction_threshold": 0.8})
    store = runtime.store.tenant("acme")
    await store.create("inf", model="dev-echo", infinite=True)
    await start_worker(small)
    prompts = [f"Topic number {i}: " + "details " * 15 for i in range(12)]
    for p in prompts:
        await send(store, queue, "inf", p)
        await wait_idle(store, "inf")
    for _ in range(200):
        info = await store.get("inf")
        if info.compacted_through:
            break
        await asyncio.sleep(0.02)
    assert info.compacted_through
    await send(store, queue, "inf", "What were we discussing?")
    events = await wait_idle(store, "inf")
    kinds = types(events)
    assert "session.compaction_start" in kinds and "session.compaction_complete" in kinds
    # every message is still in the durable history, in order, with the compaction record
    history = [e async for e in store.iter_events("inf")]
    assert "session.compaction_complete" in types(history)
    msgs = messages_from_events(history)
    assert [m.content for m in msgs if m.role == "user"] == [*prompts, "What were we discussing?"]
    assert sum(1 for m in msgs if m.role == "assistant") == len(prompts) + 1
    # the last turn used the summary: the dev model names compacted prompts through it
    recall = msgs[-1].content
    assert "Topic number 0" in recall
    history_key = session_keys("wt", "acme", "inf").history
    assert info.infinite and await runtime.redis.ttl(history_key) == -1


async def test_streaming_and_plain_sessions_send_the_model_the_same_context(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    """The context is built from the durable history, so streamed deltas take no room in it:
    every turn of a streaming session is sent what the same turn of a plain session is."""
    store = runtime.store.tenant("acme")
    await store.create("plain", model="dev-echo", system_message="Be brief.")
    await store.create("streamed", model="dev-echo", system_message="Be brief.", streaming=True)
    await start_worker()
    prompts = [f"Prompt {i}: tell me about topic {i} " + "in detail " * 8 for i in range(6)]
    for p in prompts:
        for sid in ("plain", "streamed"):
            await send(store, queue, sid, p)
            await wait_idle(store, sid)
    live = await store.live_events("streamed")
    assert sum(1 for e in live if e["type"] == "assistant.message_delta") > 6 * 3
    sent: dict[str, list[list[tuple[str, str]]]] = {}
    for sid in ("plain", "streamed"):
        info = await store.get(sid)
        turns = [e["id"] for e in await store.read_events(sid) if e["type"] == "user.message"]
        sent[sid] = []
        for turn in turns:
            context, _ = await turn_context(store, info, turn, settings)
            sent[sid].append([(m.role.value, m.content) for m in context.messages])
    assert sent["streamed"] == sent["plain"]
    # the context grows by one exchange per turn: system + 2 * earlier turns + the prompt
    assert [len(c) for c in sent["plain"]] == [1 + 2 * i + 1 for i in range(6)]


async def test_streaming_session_compacts_like_a_plain_one(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    small = settings.model_copy(update={"model_context_tokens": 400, "compaction_threshold": 0.8})
    store = runtime.store.tenant("acme")
    await start_worker(small)
    tokens: dict[str, list[int]] = {}
    for sid, streaming in (("inf-plain", False), ("inf-stream", True)):
        await store.create(sid, model="dev-echo", infinite=True, streaming=streaming)
        for i in range(12):
            await send(store, queue, sid, f"Topic number {i}: " + "details " * 15)
            await wait_idle(store, sid)
        for _ in range(200):
            info = await store.get(sid)
            if info.compacted_through:
                break
            await asyncio.sleep(0.02)
        assert info.compacted_through, sid
        history = await store.read_events(sid)
        assert "session.compaction_complete" in types(history)
        # what each turn measured against the window, from the start of the conversation
        whole = info.model_copy(update={"compacted_through": ""})
        turns = [e["id"] for e in history if e["type"] == "user.message"]
        tokens[sid] = [
            (await turn_context(store, whole, t, small))[0].history_tokens for t in turns
        ]
    # the same measure in both up to the turn where it first passes the threshold, so
    # compaction triggers at the same turn (later replies depend on when the compaction job ran)
    first = next(i for i, t in enumerate(tokens["inf-plain"]) if needs_compaction(t, 400, 0.8))
    assert tokens["inf-stream"][: first + 1] == tokens["inf-plain"][: first + 1]
    assert needs_compaction(tokens["inf-stream"][first], 400, 0.8)


async def test_a_compaction_that_ends_after_a_later_one_does_not_move_it_back(
    runtime: Runtime, settings: Settings
) -> None:
    """Two compaction jobs of one session overlap: the one folding less ends last. The session
    keeps the later point and its summary."""
    store = runtime.store.tenant("acme")
    await store.create("folded", model="dev-echo", infinite=True)
    ids = []
    for i in range(4):
        for kind in ("user.message", "assistant.message"):
            res = await store.append("folded", [NewEvent(kind, {"content": f"{kind} {i}"})])
            ids += res.event_ids
    dev = build_provider(settings)
    asked, gate = asyncio.Event(), asyncio.Event()

    class Gated:
        """The dev model, answering once the test lets it."""

        async def complete(self, messages: Any, **kwargs: Any) -> Any:
            asked.set()
            await gate.wait()
            return await dev.complete(messages, **kwargs)

    early = asyncio.create_task(
        compact_session({"runtime": runtime, "provider": Gated()}, "acme", "folded", ids[1])
    )
    await asked.wait()  # it read the session and asked the model
    late = await compact_session({"runtime": runtime, "provider": dev}, "acme", "folded", ids[5])
    assert late == "compacted"
    gate.set()
    assert await early == "superseded by another compaction"
    assert (await store.get("folded")).compacted_through == ids[5]
