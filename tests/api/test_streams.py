"""Server-Sent Events over a real socket (uvicorn in-process): follow, resume, end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service import keys as K
from service.api import sse
from service.events import timestamp_of
from service.ids import id_order
from service.metrics import Metrics
from service.models import NewEvent, SessionMode
from service.runtime import Runtime
from tests.api.conftest import PREFIX, Serve, TenantKey


@pytest.fixture(autouse=True)
def quick_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "WAIT_SLICE_MS", 100)
    monkeypatch.setattr(sse, "REAUTH_SECONDS", 0.05)


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parsed SSE messages (comments as ``{"comment": ...}``)."""
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            fields[name] = value


async def take(messages: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for msg in messages:
            if "id" in msg or "event" in msg:
                out.append(msg)
                if len(out) == n:
                    break
    return out


def user(text: str) -> NewEvent:
    return NewEvent(type="user.message", data={"content": text})


async def test_follow_disconnect_and_resume_exactly_once(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("live", model="m")
    base = await serve(app)
    url = f"{base}/v1/sessions/live/events/stream"
    received: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", url, headers=acme.headers) as r:
            assert r.status_code == 200  # subscribed before the headers are sent
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            messages = sse_messages(r)
            await store.append("live", [user("one"), user("two")])
            received += await take(messages, 2)
        # disconnected; more happens meanwhile
        await store.append("live", [user("three")])
        await store.append("live", [NewEvent(type="session.idle")])
        await store.append("live", [user("four")])
        headers = {**acme.headers, "Last-Event-ID": received[-1]["id"]}
        async with http.stream("GET", url, headers=headers) as r:
            messages = sse_messages(r)
            received += await take(messages, 3)
            await store.append("live", [user("five")])
            received += await take(messages, 1)
    events = [json.loads(m["data"]) for m in received]
    assert [m["event"] for m in received] == [e["type"] for e in events]
    # durable events keep their history ids; the SSE ids are live positions, resumable
    assert [e for e in events if e["type"] == "user.message"] == await store.read_events("live")
    assert [e["data"].get("content") for e in events] == [
        "one", "two", "three", None, "four", "five"
    ]  # fmt: skip
    rows = await runtime.redis.xrange(K.live_key(runtime.settings.key_prefix, "acme", 0))
    live_ids = [i for i, f in rows if f["s"] == "live"][1:]  # after session.start
    assert [m["id"] for m in received] == ["L" + i for i in live_ids]
    # a transient event's id is its SSE cursor: no event id repeats, whatever counters made them
    (idle,) = [(m, e) for m, e in zip(received, events, strict=True) if e["type"] == "session.idle"]
    assert idle[1]["id"] == idle[0]["id"]
    assert idle[1]["timestamp"] == timestamp_of(idle[0]["id"].removeprefix("L"))
    assert len({e["id"] for e in events}) == len(events)
    for _ in range(100):  # the server notices both disconnects and closes the loops
        if app.state.api.metrics.streams_open._value.get() == 0:
            break
        await asyncio.sleep(0.05)
    assert app.state.api.metrics.streams_open._value.get() == 0
    assert app.state.api.streams.open == {}


async def test_resume_from_history_id_or_beyond_the_window(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("gap", model="m")
    ids = (await store.append("gap", [user("a"), user("b"), user("c")])).event_ids
    base = await serve(app)
    url = f"{base}/v1/sessions/gap/events/stream"
    async with httpx.AsyncClient(timeout=10) as http:
        # a history id: the durable history after it, then live events
        headers = {**acme.headers, "Last-Event-ID": ids[0]}
        async with http.stream("GET", url, headers=headers) as r:
            messages = sse_messages(r)
            replayed = await take(messages, 2)
            await store.append("gap", [user("d")])
            replayed += await take(messages, 1)
        assert [json.loads(m["data"])["data"]["content"] for m in replayed] == ["b", "c", "d"]
        assert [json.loads(m["data"])["id"] for m in replayed[:2]] == ids[1:]
        # an id the live window no longer holds (and no history id): told to re-read history
        headers = {**acme.headers, "Last-Event-ID": "1000-3"}
        async with http.stream("GET", url, headers=headers) as r:
            messages = sse_messages(r)
            (resync,) = await take(messages, 1)
            await store.append("gap", [user("e")])
            (after,) = await take(messages, 1)
        # cut off right after the resync: its id resumes there, with what came after it
        headers = {**acme.headers, "Last-Event-ID": resync["id"]}
        async with http.stream("GET", url, headers=headers) as r:
            (resumed,) = await take(sse_messages(r), 1)
    assert resync["event"] == "session.resync"
    data = json.loads(resync["data"])
    assert data["session_id"] == "gap"
    assert data["last_event_id"] == json.loads(replayed[-1]["data"])["id"]  # "d", the newest
    assert resync["id"] == data["last_event_id"]
    assert json.loads(after["data"])["data"]["content"] == "e"
    assert json.loads(resumed["data"])["data"]["content"] == "e"


async def test_open_streams_share_one_redis_reader_and_are_capped(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey
) -> None:
    store = runtime.store.tenant("acme")
    streams = 100
    for i in range(streams):
        await store.create(f"many{i}", model="m")
    base = await serve(app)

    async def clients() -> int:
        return int((await runtime.redis.info("clients"))["connected_clients"])

    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=streams + 10))
        )
        await http.get(f"{base}/v1/sessions/many0", headers=acme.headers)  # warm the pool
        before = await clients()
        opened = []
        for i in range(streams):
            url = f"{base}/v1/sessions/many{i}/events/stream"
            r = await stack.enter_async_context(http.stream("GET", url, headers=acme.headers))
            assert r.status_code == 200
            opened.append(sse_messages(r))
        await asyncio.sleep(0.3)  # every stream past its first loop
        during = await clients()
        assert during - before <= 3, (before, during)
        # every stream is live: an event reaches the last one opened
        await store.append(f"many{streams - 1}", [user("hello")])
        (got,) = await take(opened[-1], 1)
        assert json.loads(got["data"])["data"]["content"] == "hello"
        # the tenant's cap answers 429 with a problem document, and nothing else changes
        app.state.api.streams.limit = streams
        r = await http.get(f"{base}/v1/sessions/many0/events/stream", headers=acme.headers)
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert "open event streams" in r.json()["detail"]
        assert app.state.api.streams.open == {"acme": streams}


async def test_after_parameter_and_keepalive(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.2)
    store = runtime.store.tenant("acme")
    await store.create("quiet", model="m")
    ids = (await store.append("quiet", [user("a"), user("b")])).event_ids
    base = await serve(app)
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{base}/v1/sessions/quiet/events/stream"
        async with http.stream("GET", url, params={"after": ids[0]}, headers=acme.headers) as r:
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                async for msg in sse_messages(r):
                    seen.append(msg)
                    if msg.get("comment") == "keepalive":
                        break
    assert [json.loads(m["data"])["id"] for m in seen if "id" in m] == [ids[1]]
    assert seen[0] == {"retry": str(sse.RETRY_MS)}


@pytest.mark.parametrize("settings", ["single"], indirect=True)
async def test_a_stream_opened_late_still_gets_the_transient_events_in_order(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey
) -> None:
    """A handle whose listener connects after a fast turn has run (``on()`` then ``send``):
    from the start, or from a history id, the stream serves the live entries since (the
    window holds them), so the deltas and turn markers a history replay skips are there,
    in their order."""
    store = runtime.store.tenant("acme")
    await store.create("fast", model="m")
    prompt = (await store.append("fast", [user("hi")])).event_ids[0]
    turn = [
        NewEvent(type="assistant.turn_start", data={"turnId": prompt}),
        NewEvent(type="assistant.message_delta", data={"deltaContent": "he"}),
        NewEvent(type="assistant.message_delta", data={"deltaContent": "llo"}),
        NewEvent(type="assistant.message", data={"content": "hello", "reply_to": prompt}),
        NewEvent(type="session.idle"),
    ]
    for ev in turn:
        await store.append("fast", [ev])
    since_start = ["user.message", *(ev.type for ev in turn)]
    base = await serve(app)
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{base}/v1/sessions/fast/events/stream"
        for cursor, expected in ((None, since_start), (prompt, since_start[1:])):
            params = {} if cursor is None else {"after": cursor}
            async with http.stream("GET", url, params=params, headers=acme.headers) as r:
                got = await take(sse_messages(r), len(expected))
            assert [m["event"] for m in got] == expected
            assert all(m["id"].startswith("L") for m in got)  # resumable exactly


async def test_stream_ends_when_session_is_deleted(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("doomed", model="m")
    base = await serve(app)
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{base}/v1/sessions/doomed/events/stream"
        async with http.stream("GET", url, headers=acme.headers) as r:
            assert r.status_code == 200  # subscribed before the headers are sent
            messages = sse_messages(r)
            deleted = await http.delete(f"{base}/v1/sessions/doomed", headers=acme.headers)
            assert deleted.status_code == 204
            rest = [m async for m in messages if "event" in m]
    assert [m["event"] for m in rest] == ["session.deleted"]
    assert "id" not in rest[0]
    assert json.loads(rest[0]["data"])["session_id"] == "doomed"


async def test_stream_ends_when_key_is_rotated(
    app: FastAPI, serve: Serve, runtime: Runtime, acme: TenantKey
) -> None:
    await runtime.store.tenant("acme").create("s", model="m")
    base = await serve(app)
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{base}/v1/sessions/s/events/stream"
        async with http.stream("GET", url, headers=acme.headers) as r:
            assert r.status_code == 200
            messages = sse_messages(r)
            await runtime.tenants.rotate_key("acme")
            async with asyncio.timeout(10):
                rest = [m async for m in messages if "event" in m]
    assert rest == []


async def test_stream_of_missing_session_is_404(client: httpx.AsyncClient, acme: TenantKey) -> None:
    r = await client.get("/v1/sessions/none/events/stream", headers=acme.headers)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    for cursor in ("x", "LL5-0"):  # the cursor is quoted as it was sent
        r = await client.get(
            "/v1/sessions/none/events/stream", headers={**acme.headers, "Last-Event-ID": cursor}
        )
        assert r.status_code == 422
        assert r.json()["detail"] == f"{cursor!r} is not an event id or live cursor"


async def test_lifecycle_read_and_stream(
    app: FastAPI, serve: Serve, client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("l1", model="m")
    r = await client.get("/v1/lifecycle", headers=acme.headers)
    assert [(e["type"], e["session_id"]) for e in r.json()["data"]] == [("session.created", "l1")]
    first = r.json()["data"][0]["id"]
    assert r.json()["data"][0]["at"].endswith("Z")
    r = await client.get("/v1/lifecycle", params={"after": first}, headers=acme.headers)
    assert r.json()["data"] == []
    r = await client.get("/v1/lifecycle", params={"after": "zz"}, headers=acme.headers)
    assert r.status_code == 422

    base = await serve(app)
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{base}/v1/lifecycle/stream"
        async with http.stream("GET", url, headers=acme.headers) as r:  # from now on
            messages = sse_messages(r)
            await store.delete("l1")
            got = await take(messages, 1)
        assert got[0]["event"] == "session.deleted"
        async with http.stream("GET", url, headers={**acme.headers, "Last-Event-ID": first}) as r:
            again = await take(sse_messages(r), 1)
    assert again == got


async def events_until_idle(
    store: Any, following: Any, session_id: str, notify: asyncio.Event, then: Any = None
) -> list[str]:
    """The event types a stream of ``following`` serves until ``session.idle``; ``then`` (a
    coroutine function) runs once two events have been served (past the one-event replay of
    the tests that pass it)."""

    async def allowed() -> None:
        return None

    async def connected() -> bool:
        return False

    follow = sse.Follow(allowed, connected, Metrics())
    stream = sse.session_events(follow, store, following, session_id, notify)
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for chunk in stream:
            seen += [line[7:] for line in chunk.decode().splitlines() if line.startswith("event: ")]
            if then is not None and len(seen) >= 2:
                await then()
                then = None
            if "session.idle" in seen:
                break
    await stream.aclose()
    return seen


def delta(text: str, turn: str) -> NewEvent:
    return NewEvent(type="assistant.message_delta", data={"deltaContent": text, "reply_to": turn})


async def resumed_past_the_window(runtime: Runtime, sid: str) -> tuple[Any, str, Any, Any]:
    """A session whose first prompt's copy the live window lost, and a second prompt: a stream
    resumed from the first replays the history, then follows the live entries after the copy
    of the second. Returns the store, the second prompt's id, the following and its notify."""
    store = runtime.store.tenant("acme")
    await store.create(sid, model="m")
    first = (await store.append(sid, [user("zero")])).event_ids[0]
    await runtime.redis.xtrim(K.live_key(PREFIX, "acme", 0), maxlen=0, approximate=False)
    turn = (await store.append(sid, [user("one")])).event_ids[0]
    notify = asyncio.Event()
    following = await store.follow(sid, first, notify)
    assert following.replay_after == first
    assert following.copy_of == (None if runtime.store.cluster else turn)
    return store, turn, following, notify


async def test_a_copy_written_a_few_ms_after_its_event_is_found(runtime: Runtime) -> None:
    """A script that runs past a millisecond before it writes the live copy gives the copy a
    later ms than its event's (Redis < 7.2 gives ``XADD *`` the clock of the moment): the
    copy is still found, behind other sessions' entries, and the stream resumes after it."""
    store = runtime.store.tenant("acme")
    await store.create("late", model="m")
    first = (await store.append("late", [user("zero")])).event_ids[0]
    live = K.live_key(PREFIX, "acme", 0)
    await runtime.redis.xtrim(live, maxlen=0, approximate=False)
    turn = (await store.append("late", [user("one")])).event_ids[0]
    (_, fields), *_ = await runtime.redis.xrevrange(live, count=1)
    await runtime.redis.delete(live)
    ms = int(turn.split("-")[0])
    for n in range(450):  # other sessions' entries first, then the copy 7 ms late
        await runtime.redis.xadd(live, {"s": "other", "e": "x{}"}, id=f"{ms}-{n + 1}")
    await runtime.redis.xadd(live, fields, id=f"{ms + 7}-0")
    following = await store.follow("late", first, asyncio.Event())
    try:
        assert following.copy_of == (None if runtime.store.cluster else turn)
    finally:
        following.close()


async def test_a_copy_after_popped_items_copies_is_found(runtime: Runtime) -> None:
    """Items popped, then one appended: the new item reuses a popped one's ordinal in a later
    ms, so a popped item's copy (a higher ordinal) comes before the new item's. A stream
    resumed from the new item still finds its copy and follows the live entries after it."""
    if runtime.store.cluster:
        return  # copies are published apart there: a resume from an item replays
    store = runtime.store.tenant("acme")
    for attempt in range(50):
        sid = f"box{attempt}"
        await store.create(sid, model="m", mode=SessionMode.STORE)
        items = [{"role": "user", "content": c} for c in "abc"]
        popped = (await store.append_items(sid, items)).event_ids[2]
        await store.pop_item(sid)
        await store.pop_item(sid)
        new = (await store.append_items(sid, [{"role": "user", "content": "d"}])).event_ids[0]
        if id_order(new)[0] - id_order(popped)[0] > 1:
            continue  # the popped copy is outside the millisecond read first: try again
        assert id_order(new)[1] < id_order(popped)[1]
        following = await store.follow(sid, new, asyncio.Event())
        following.close()
        assert following.replay_after is None  # no replay: the live entries after its copy
        return
    pytest.fail("no append landed in the millisecond after its pops")


def durable_in_order(seen: list[str], expected: list[str]) -> bool:
    """On a Cluster (copies published apart from their events) a replay reads to the end:
    durable events come once and in order, transient ones may come after a later durable one."""
    durable = ("user.message", "assistant.message", "abort")
    return [t for t in seen if t in durable] == [t for t in expected if t in durable]


async def test_a_replay_ends_where_the_live_entries_start(runtime: Runtime) -> None:
    """A stream resumed from a history id whose copy the window no longer holds replays the
    history up to the newest event it knew of, then follows the live entries after that
    event's copy: a turn that streams and ends meanwhile comes in order, deltas before the
    reply."""
    store, second, following, notify = await resumed_past_the_window(runtime, "r")
    reply = NewEvent(type="assistant.message", data={"content": "hello", "reply_to": second})
    await store.append("r", [delta("he", second)])
    await store.append("r", [reply, NewEvent(type="session.idle")])
    seen = await events_until_idle(store, following, "r", notify)
    expected = ["user.message", "assistant.message_delta", "assistant.message", "session.idle"]
    assert seen == expected or (runtime.store.cluster and durable_in_order(seen, expected))


async def test_a_replay_past_a_prompt_sent_mid_turn_keeps_the_turns_deltas(
    runtime: Runtime,
) -> None:
    """The same, when a prompt is sent while a turn streams, and the turn goes on after the
    replay: every delta is served, each in its place."""
    store, turn, following, notify = await resumed_past_the_window(runtime, "m")
    await store.append("m", [delta("he", turn)])
    await store.append("m", [delta("ll", turn)])
    await store.append("m", [user("two")])

    async def rest_of_the_turn() -> None:
        reply = NewEvent(type="assistant.message", data={"content": "hello", "reply_to": turn})
        await store.append("m", [delta("o", turn)])
        await store.append("m", [reply, NewEvent(type="session.idle")])

    seen = await events_until_idle(store, following, "m", notify, rest_of_the_turn)
    deltas = ["assistant.message_delta"] * 2
    expected = [
        "user.message",
        *deltas,
        "user.message",
        deltas[0],
        "assistant.message",
        "session.idle",
    ]
    assert seen == expected or (runtime.store.cluster and durable_in_order(seen, expected))
    assert seen.count("assistant.message_delta") == 3


async def test_a_replay_serves_an_aborted_turns_start_before_the_abort(runtime: Runtime) -> None:
    """A turn that starts, streams and is aborted during the replay: its start and deltas come
    before the abort, never after it."""
    store, turn, following, notify = await resumed_past_the_window(runtime, "a")
    await store.append("a", [NewEvent(type="assistant.turn_start", data={"turnId": turn})])
    await store.append("a", [delta("he", turn)])
    await store.append("a", [NewEvent(type="abort"), NewEvent(type="session.idle")])  # as abort
    seen = await events_until_idle(store, following, "a", notify)
    expected = [
        "user.message",
        "assistant.turn_start",
        "assistant.message_delta",
        "abort",
        "session.idle",
    ]
    assert seen == expected or (runtime.store.cluster and durable_in_order(seen, expected))
