"""Turns against the fake OpenAI-compatible server: finish reasons, overflow, calibration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.config import Settings
from service.models import NewEvent
from service.runtime import Runtime
from service.store import TenantStore
from tests.providers.fake_openai import FakeOpenAI
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers.queue import TurnQueue


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server
    assert not server.errors, f"the fake server failed: {server.errors!r}"


def on_fake(settings: Settings, server: FakeOpenAI, **more: Any) -> Settings:
    return settings.model_copy(
        update={
            "provider": "openai",
            "openai_base_url": server.base_url,
            "provider_timeout_seconds": 5.0,
            "provider_max_retries": 1,
            **more,
        }
    )


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e["type"] == kind]


async def history(store: TenantStore, session_id: str, exchanges: int, words: int) -> None:
    """``exchanges`` user/assistant pairs of ``words`` words each, appended as stored history."""
    for i in range(exchanges):
        text = " ".join(f"w{i}x{j}" for j in range(words))
        await store.append(
            session_id,
            [
                NewEvent(type="user.message", data={"content": f"question {text}"}),
                NewEvent(type="assistant.message", data={"content": f"answer {text}"}),
            ],
        )


@pytest.mark.parametrize("streaming", [False, True])
async def test_finish_reason_reaches_the_reply_event(
    runtime: Runtime,
    queue: TurnQueue,
    start_worker: WorkerFactory,
    settings: Settings,
    fake_openai: FakeOpenAI,
    streaming: bool,
) -> None:
    store = runtime.store.tenant("acme")
    await start_worker(on_fake(settings, fake_openai))
    for model, reason in [("gpt-test", "stop"), ("length", "length"), ("content-filter", None)]:
        sid = f"fr-{model}"
        await store.create(sid, model=model, streaming=streaming)
        await send(store, queue, sid, "tell me a long story")
        events = await wait_idle(store, sid)
        [reply] = of_type(events, "assistant.message")
        assert reply["data"]["finish_reason"] == (reason or "content_filter")
        if model == "length":
            assert reply["data"]["content"] == "Echo: tell me"  # cut off, and marked so
        if model == "content-filter":
            assert reply["data"]["content"] == ""
        assert not of_type(events, "session.error")


async def test_dev_model_replies_say_stop(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("dev", model="dev-echo")
    await start_worker()
    await send(store, queue, "dev", "hello")
    [reply] = of_type(await wait_idle(store, "dev"), "assistant.message")
    assert reply["data"]["finish_reason"] == "stop"


async def test_overflow_compacts_and_succeeds(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("big", model="gpt-test")  # a finite session: never compacted before
    await history(store, "big", exchanges=10, words=20)
    async with FakeOpenAI(context_window=150) as server:
        await start_worker(on_fake(settings, server))
        prompt = await send(store, queue, "big", "and what now?")
        events = await wait_idle(store, "big")
    assert not server.errors
    [reply] = [e for e in of_type(events, "assistant.message") if "reply_to" in e["data"]]
    assert reply["data"]["content"] == "Echo: and what now?"
    assert reply["data"]["reply_to"] == prompt
    assert not of_type(events, "session.error")
    # the first try overflowed; the session was compacted; the second try fitted
    summaries = [
        r for r in server.requests if r.body["messages"][0]["content"].startswith("Summarize")
    ]
    assert len(summaries) == 1
    [compacted] = of_type(events, "session.compaction_complete")
    assert compacted["data"]["summary"].startswith("Summary: ")
    info = await store.get("big")
    assert info.compacted_through == compacted["data"]["through"]
    retry = [r for r in server.requests if r.body["messages"][-1]["content"] == "and what now?"]
    assert len(retry) == 2
    sent = retry[-1].body["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].endswith(compacted["data"]["summary"])
    # the overflow and the usage of the answer calibrated the session's estimate
    assert info.calib_reported > 0 and info.calib_estimated > 0
    # every message is still there
    assert len(of_type(events, "user.message")) == 11


async def test_second_overflow_ends_the_turn_with_a_clear_error(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("huge", model="gpt-test")
    await history(store, "huge", exchanges=4, words=10)
    async with FakeOpenAI(context_window=20) as server:
        await start_worker(on_fake(settings, server))
        prompt = await send(store, queue, "huge", " ".join(["word"] * 40))
        events = await wait_idle(store, "huge")
    [error] = of_type(events, "session.error")
    assert error["data"]["errorType"] == "context_length_exceeded"
    assert error["data"]["reply_to"] == prompt
    assert (
        "does not fit the model's context window, even after compaction"
        in (error["data"]["message"])
    )
    assert "maximum context length is 20 tokens" in error["data"]["message"]
    assert not [e for e in of_type(events, "assistant.message") if "reply_to" in e["data"]]
    assert events[-1]["type"] in ("session.idle", "session.title_changed")
    asked = [r for r in server.requests if r.body["messages"][-1]["content"].startswith("word")]
    assert len(asked) == 2  # the first try and one more, no further


async def test_stream_options_setting_for_endpoints_that_refuse_it(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("old", model="gpt-test", streaming=True)
    async with FakeOpenAI(reject_stream_options=True) as server:
        await start_worker(on_fake(settings, server, provider_stream_usage=False))
        await send(store, queue, "old", "hello there")
        events = await wait_idle(store, "old")
    assert "stream_options" not in server.requests[0].body
    [reply] = of_type(events, "assistant.message")
    assert reply["data"]["content"] == "Echo: hello there"
    assert "".join(d["data"]["deltaContent"] for d in of_type(events, "assistant.message_delta"))
    assert "usage" not in reply["data"]  # the stream carried none
    assert not of_type(events, "session.error")


async def test_usage_calibrates_the_session(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory, settings: Settings
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("cal", model="gpt-test")
    async with FakeOpenAI() as server:
        await start_worker(on_fake(settings, server))
        await send(store, queue, "cal", "one two three four five six")
        events = await wait_idle(store, "cal")
    [reply] = of_type(events, "assistant.message")
    info = await store.get("cal")
    assert info.calib_reported == reply["data"]["usage"]["prompt_tokens"] == 6
    assert info.calib_estimated > 0
