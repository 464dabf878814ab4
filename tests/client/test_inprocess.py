"""The client against the real app, a real Redis and a real worker, all in this process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from redis_sessions_client import (
    AuthenticationError,
    Event,
    RateLimited,
    SessionClient,
    SessionError,
    SessionNotFound,
    TurnError,
    ValidationError,
)

from service.config import Settings
from service.models import NewEvent
from service.runtime import Runtime
from service.tenants import Limits
from tests.client.asgi import StreamingASGITransport
from tests.client.conftest import BASE_URL, start_worker


async def test_conversation_survives_the_handle(client: SessionClient) -> None:
    session = await client.create_session({"session_id": "project-discussion-2024"})
    assert session.session_id == session.sessionId == "project-discussion-2024"
    first = await session.send_and_wait({"prompt": "Let's plan a web app architecture"})
    assert isinstance(first, Event) and first.type == "assistant.message"
    assert 'You said: "Let\'s plan a web app architecture"' in first.data["content"]
    await session.send_and_wait("What database should we use?")
    await session.destroy()

    resumed = await client.resume_session("project-discussion-2024")
    reply = await resumed.send_and_wait(prompt="What were we discussing?")
    content = reply.data["content"]
    assert "Let's plan a web app architecture" in content
    assert "What database should we use?" in content

    messages = await resumed.get_messages()
    assert [m.role for m in messages] == ["user", "assistant"] * 3
    assert messages[-1].content == content and messages[-1].id == reply.id
    assert reply.data["reply_to"] == messages[-2].id
    await resumed.destroy()


async def test_create_options_in_every_style(client: SessionClient) -> None:
    a = await client.create_session(
        session_id="kw-style", model="dev-echo", labels={"team": "a"}, name="Keywords"
    )
    b = await client.create_session(
        {"sessionId": "camel-style", "systemMessage": "Be brief", "infiniteSessions": True}
    )
    assert (a.info.model, a.info.labels, a.info.name) == ("dev-echo", {"team": "a"}, "Keywords")
    assert a.info.expires_at is not None and not a.info.infinite
    assert b.info.infinite and b.info.expires_at is None
    assert b.info.system_message == "Be brief"
    c = await client.create_session()
    assert c.session_id  # the service picks an id


async def test_listing_follows_cursors_newest_first(client: SessionClient) -> None:
    ids = [f"s-{i}" for i in range(7)]
    for sid in ids:
        await client.create_session(session_id=sid, labels={"even": str(int(sid[-1]) % 2 == 0)})
    listed = [i.session_id async for i in client.iter_sessions(page_size=3)]
    assert listed == ids[::-1]
    assert [i.session_id for i in await client.list_sessions()] == ids[::-1]
    assert [i.session_id for i in await client.list_sessions(limit=2)] == ids[:-3:-1]
    evens = await client.list_sessions(labels={"even": "True"})
    assert {i.session_id for i in evens} == {"s-0", "s-2", "s-4", "s-6"}
    assert await client.get_last_session_id() == "s-6"
    info = (await client.list_sessions(limit=1))[0]
    assert info.get("sessionId", "unknown") == "s-6" and info["modifiedTime"]
    meta = await client.get_session_metadata("s-3")
    assert meta.session_id == "s-3" and meta.message_count == 0


async def test_delete_and_the_not_found_errors(client: SessionClient) -> None:
    await client.create_session(session_id="doomed")
    await client.delete_session("doomed")
    with pytest.raises(SessionNotFound) as info:
        await client.resume_session("doomed")
    assert isinstance(info.value, RuntimeError) and info.value.status_code == 404
    with pytest.raises(RuntimeError):
        await client.delete_session("doomed")
    assert await client.get_last_session_id() is None


async def test_invalid_input_is_a_validation_error(client: SessionClient) -> None:
    for bad in ("-starts-with-dash", "has space", "x" * 129, "sl/ash"):
        with pytest.raises(ValidationError) as info:
            await client.create_session(session_id=bad)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError):
        await client.resume_session("bad id!")
    session = await client.create_session(session_id="ok")
    with pytest.raises(ValidationError):
        await session.send({"prompt": ""})
    with pytest.raises(ValidationError):
        await session.bookmark("no good")
    for limit in (0, -1, 2.5):
        with pytest.raises(ValidationError, match="limit must be a whole number from 1"):
            await client.list_sessions(limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="limit must be a whole number from 1"):
            await session.get_events(limit=limit)  # type: ignore[arg-type]


async def test_a_full_quota_is_refused_at_once_not_retried(
    transport: StreamingASGITransport, runtime: Runtime
) -> None:
    """A 429 for the tenant's session quota lasts until a session is deleted: the client
    raises it at once, where a rate limit's 429 is retried after its Retry-After."""
    _, key = await runtime.tenants.create("small", limits=Limits(max_sessions=1))
    sent: list[str] = []

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            return await transport.handle_async_request(request)

    async with SessionClient(BASE_URL, api_key=key, transport=Counting()) as client:
        await client.create_session(session_id="one")
        with pytest.raises(RateLimited) as info:
            await client.create_session(session_id="two")
    assert info.value.problem["limit"] == "sessions"
    assert sent.count("/v1/sessions") == 2


async def test_duplicate_id_is_a_conflict(client: SessionClient) -> None:
    await client.create_session(session_id="twice")
    with pytest.raises(SessionError) as info:
        await client.create_session(session_id="twice")
    assert info.value.status_code == 409


async def test_bad_key_is_an_authentication_error(
    transport: StreamingASGITransport, api_key: str
) -> None:
    for key in ("sk_acme_wrong", "not-a-key", ""):
        async with SessionClient(BASE_URL, api_key=key, transport=transport) as bad:
            with pytest.raises(AuthenticationError) as info:
                await bad.list_sessions()
            assert info.value.status_code == 401


async def test_handlers_get_live_events(client: SessionClient) -> None:
    session = await client.create_session(session_id="watched")
    seen: list[str] = []
    replies: list[str] = []
    idle = asyncio.Event()

    def on_any(event: Event) -> None:
        seen.append(event.type)
        if event.type == "session.idle":
            idle.set()

    async def on_reply(event: Event) -> None:
        replies.append(event.data["content"])

    def broken(event: Event) -> None:
        raise RuntimeError("a failing handler does not stop the others")

    stop_any = session.on(on_any)
    stop_reply = session.on("assistant.message", on_reply)
    stop_broken = session.on(broken)
    await session.send({"prompt": "hello there"})
    await asyncio.wait_for(idle.wait(), 10)
    assert seen[0] == "user.message"
    assert "assistant.message" in seen and seen[-1] == "session.idle"
    assert replies == ['You said: "hello there". (dev model, 1 message in context)']

    listener = session._listener
    assert listener is not None and not listener.done()
    stop_any()
    stop_reply()
    assert not listener.done()
    stop_broken()  # the last one: the background stream stops
    await asyncio.wait({listener}, timeout=5)
    assert listener.done() and session._listener is None


async def test_a_listener_started_again_goes_on_where_the_last_one_stopped(
    client: SessionClient,
) -> None:
    """Handlers removed after a turn and added again: the new listener starts after the last
    event the old one handed on (a transient one, ``session.idle``), so none comes twice."""
    session = await client.create_session(session_id="relisten")
    seen: list[Event] = []
    idle = asyncio.Event()

    def on_any(event: Event) -> None:
        seen.append(event)
        if event.type == "session.idle":
            idle.set()

    for prompt in ("one", "two"):
        idle.clear()
        stop = session.on(on_any)
        await session.send(prompt)
        await asyncio.wait_for(idle.wait(), 10)
        await asyncio.sleep(0.2)  # what follows the idle event comes through too
        stop()
    ids = [e.id for e in seen]
    assert len(set(ids)) == len(ids), [(e.type, e.id) for e in seen]
    assert [e.data["content"] for e in seen if e.type == "user.message"] == ["one", "two"]


async def test_send_and_wait_from_a_handler_gets_its_reply(client: SessionClient) -> None:
    """A handler that sends a follow-up and waits for it: the handle's listener is running
    that handler, so the follow-up waits over a stream of its own instead of on it."""
    session = await client.create_session(session_id="chained")
    follow_up: list[str] = []
    done = asyncio.Event()

    async def on_reply(event: Event) -> None:
        if not follow_up:
            follow_up.append("asked")
            reply = await session.send_and_wait({"prompt": "and then?"}, timeout=10)
            follow_up.append(reply.data["content"])
            done.set()

    session.on("assistant.message", on_reply)
    first = await session.send_and_wait({"prompt": "first"}, timeout=10)
    assert first.data["content"].startswith('You said: "first"')
    await asyncio.wait_for(done.wait(), 10)
    assert follow_up[1].startswith('You said: "and then?"')
    await session.destroy()


async def test_stop_closes_every_listener(transport: StreamingASGITransport, api_key: str) -> None:
    client = SessionClient(BASE_URL, api_key=api_key, transport=transport)
    await client.start()
    sessions = [await client.create_session(session_id=f"l{i}") for i in range(3)]
    for s in sessions:
        s.on(lambda event: None)
    tasks = [s._listener for s in sessions]
    await asyncio.sleep(0.05)
    await client.stop()
    assert all(t is not None and t.done() for t in tasks)


async def test_streamed_replies_arrive_as_deltas(client: SessionClient) -> None:
    session = await client.create_session(session_id="streamy", streaming=True)
    chunks: list[str] = []
    session.on("assistant.message_delta", lambda e: chunks.append(e.data["deltaContent"]))
    reply = await session.send_and_wait({"prompt": "stream this to me"})
    await asyncio.sleep(0.05)
    assert len(chunks) > 3 and "".join(chunks) == reply.data["content"]
    assert [m.role for m in await session.get_messages()] == ["user", "assistant"]
    await session.destroy()


async def test_long_histories_are_read_in_pages(client: SessionClient, runtime: Runtime) -> None:
    session = await client.create_session(session_id="long")
    store = runtime.store.tenant("acme")
    # 1,200 messages, then a run of 1,100 non-message events, then a last message: pages of
    # /messages are bounded by events scanned, so some come back short and one comes back empty.
    for start in range(0, 1200, 300):
        batch = [
            NewEvent(type="user.message", data={"content": f"m{i}"})
            for i in range(start, start + 300)
        ]
        await store.append("long", batch)
    for _ in range(11):
        await store.append("long", [NewEvent(type="custom.note", data={})] * 100)
    await store.append("long", [NewEvent(type="assistant.message", data={"content": "last"})])
    messages = await session.get_messages()
    assert len(messages) == 1201
    assert [m.content for m in messages[:3]] == ["m0", "m1", "m2"]
    assert messages[-2].content == "m1199" and messages[-1].content == "last"
    events = await session.get_events()
    assert len(events) == 1200 + 1100 + 1  # session.start is a live event, not history
    newest = await session.get_events(limit=5, reverse=True)
    assert [e.id for e in newest] == [e.id for e in events[::-1][:5]]
    middle = await session.get_events(after=events[10].id, before=events[14].id)
    assert [e.id for e in middle] == [e.id for e in events[11:14]]


async def test_bookmarks_export_and_metadata(client: SessionClient) -> None:
    session = await client.create_session(session_id="marked", name="First")
    await session.send_and_wait({"prompt": "Let's start the design"})
    mark = await session.bookmark("design_start", "Beginning of design discussion")
    assert mark.name == "design_start" and mark.message_count == 2
    await session.send_and_wait({"prompt": "Now let's discuss implementation"})
    since = await session.get_messages_since("design_start")
    assert [m.role for m in since] == ["user", "assistant"]
    assert since[0].content == "Now let's discuss implementation"
    assert [b.name for b in await session.get_bookmarks()] == ["design_start"]

    exported = await session.export()
    assert exported["session"]["session_id"] == "marked"
    assert [b["name"] for b in exported["bookmarks"]] == ["design_start"]
    types = [e["type"] for e in exported["events"]]
    assert types.count("user.message") == 2 and types.count("assistant.message") == 2
    lines = [line async for line in session.export_jsonl()]
    assert lines[0]["session"]["session_id"] == "marked"
    assert [e["id"] for e in lines[1:]] == [e["id"] for e in exported["events"]]
    with pytest.raises(ValidationError):
        await session.export(format="xml")

    await session.delete_bookmark("design_start")
    assert await session.get_bookmarks() == []
    with pytest.raises(SessionError) as info:
        await session.get_messages_since("design_start")
    assert info.value.status_code == 404 and not isinstance(info.value, SessionNotFound)

    assert (await session.rename("Renamed")).name == "Renamed"
    assert (await session.set_labels({"tier": "gold"})).labels == {"tier": "gold"}
    refreshed = await session.refresh()
    assert (refreshed.name, refreshed.message_count) == ("Renamed", 4)
    resumed = await client.resume_session("marked", {"infinite_sessions": True})
    assert resumed.info.infinite and resumed.info.expires_at is None


async def test_abort_ends_the_wait_promptly(idle_client: SessionClient) -> None:
    session = await idle_client.create_session(session_id="stuck")
    waiting = asyncio.create_task(session.send_and_wait({"prompt": "never answered"}))
    for _ in range(200):  # until the message is stored (no worker: its turn stays pending)
        if (await session.refresh()).message_count:
            break
        await asyncio.sleep(0.01)
    assert await session.abort() is True
    with pytest.raises(TurnError) as info:
        await asyncio.wait_for(waiting, 5)
    assert info.value.event.type == "abort"
    assert await session.abort() is False


async def test_send_and_wait_times_out(idle_client: SessionClient) -> None:
    session = await idle_client.create_session(session_id="slow")
    with pytest.raises(TimeoutError, match="no reply"):
        await session.send_and_wait({"prompt": "anyone?"}, timeout=0.3)


async def test_a_deleted_session_ends_the_wait(idle_client: SessionClient) -> None:
    session = await idle_client.create_session(session_id="vanishing")
    waiting = asyncio.create_task(session.send_and_wait({"prompt": "hello?"}))
    await asyncio.sleep(0.2)
    await idle_client.delete_session("vanishing")
    with pytest.raises(SessionNotFound):
        await asyncio.wait_for(waiting, 10)


async def test_provider_failure_is_a_turn_error(
    settings: Settings, runtime: Runtime, idle_client: SessionClient
) -> None:
    broken = settings.model_copy(
        update={
            "provider": "openai",
            "openai_base_url": "http://127.0.0.1:9/v1",  # nothing listens on the discard port
            "provider_max_retries": 0,
            "provider_timeout_seconds": 2,
        }
    )
    async for _ in start_worker(broken, runtime):
        session = await idle_client.create_session(session_id="failing")
        with pytest.raises(TurnError) as info:
            await session.send_and_wait({"prompt": "hello"}, timeout=15)
    event = info.value.event
    assert event.type == "session.error" and event.data["errorType"] == "connection"


async def test_a_dropped_stream_resumes_from_the_last_event(
    client: SessionClient, transport: StreamingASGITransport
) -> None:
    session = await client.create_session(session_id="flaky")
    streams: list[httpx.Request] = []

    def cut_first_stream(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if not request.url.path.endswith("/events/stream"):
            return response
        streams.append(request)
        if len(streams) > 1:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutAfter(response, events=2),
            request=request,
        )

    transport.intercept = cut_first_stream
    reply = await session.send_and_wait({"prompt": "one"})  # its stream drops mid-turn
    assert reply.data["content"].startswith('You said: "one"')
    assert len(streams) == 2
    first_after = streams[0].headers.get("last-event-id")
    resumed_after = streams[1].headers["last-event-id"]
    assert resumed_after != first_after and resumed_after == streams[1].url.params["after"]
    # the handle keeps its (resumed) stream: the next turn opens none
    reply = await session.send_and_wait({"prompt": "two"})
    assert reply.data["content"].startswith('You said: "two"')
    assert len(streams) == 2
    await session.destroy()


class _CutAfter(httpx.AsyncByteStream):
    """Passes ``events`` SSE events through, then fails like a dropped connection."""

    def __init__(self, response: httpx.Response, events: int) -> None:
        self._response = response
        self._events = events

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._response.aiter_raw():
            yield chunk
            seen += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")
            if seen >= self._events:
                raise httpx.ReadError("connection reset by peer")

    async def aclose(self) -> None:
        await self._response.aclose()


async def test_an_idempotency_key_that_cannot_be_a_header_is_refused_before_sending(
    client: SessionClient,
) -> None:
    session = await client.create_session(session_id="keys")
    for key in ("a\r\nX-Injected: 1", "clé", "k" * 201, 123):
        with pytest.raises(ValidationError, match="idempotency_key must be 1-200 printable"):
            await session.send("hi", idempotency_key=key)  # type: ignore[arg-type]
    assert await session.get_messages() == []


async def test_a_repeated_idempotency_key_makes_one_message(client: SessionClient) -> None:
    session = await client.create_session(session_id="once")
    first = await session.send("only once", idempotency_key="click-1")
    again = await session.send("only once", idempotency_key="click-1")
    assert first == again
    reply = await session.send_and_wait("and then?")
    assert 'Earlier you asked: "only once".' in reply.data["content"]
    messages = await session.get_messages()
    # the second prompt may arrive before the first reply: order within roles is what holds
    assert [m.content for m in messages if m.role == "user"] == ["only once", "and then?"]
    assert sum(1 for m in messages if m.role == "assistant") == 2
