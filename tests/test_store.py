"""The session store against a real Redis and fakeredis (``any_redis`` is parametrized)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service import keys as K
from service.errors import (
    BookmarkNotFound,
    Conflict,
    InvalidInput,
    LimitExceeded,
    PayloadTooLarge,
    SessionNotFound,
)
from service.models import NewEvent, messages_from_events
from service.store import Store, TenantStore


def user(text: str) -> NewEvent:
    return NewEvent(type="user.message", data={"content": text})


def assistant(text: str) -> NewEvent:
    return NewEvent(type="assistant.message", data={"content": text})


async def tenant_keys(redis: Redis, prefix: str) -> list[str]:
    return sorted([k async for k in redis.scan_iter(match=prefix + "*")])


async def snapshot(redis: Redis) -> dict[str, object]:
    """Every key with its type and content, to prove a failed call changed nothing."""
    out: dict[str, object] = {}
    for key in sorted([k async for k in redis.scan_iter()]):
        kind = await redis.type(key)
        if kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = await redis.lrange(key, 0, -1)
        else:
            out[key] = kind
    return out


async def test_create_with_custom_and_generated_id(acme: TenantStore) -> None:
    info = await acme.create("user-42-main", model="gpt-4o", labels={"team": "a"})
    assert info.session_id == "user-42-main"
    assert info.model == "gpt-4o"
    assert info.labels == {"team": "a"}
    assert info.event_count == 0  # session.start is a live event, not history
    assert [e["type"] for e in await acme.live_events("user-42-main")] == ["session.start"]
    generated = await acme.create(model="m")
    assert len(generated.session_id) == 36
    assert (await acme.get(generated.session_id)).session_id == generated.session_id


async def test_duplicate_create_is_conflict_and_changes_nothing(
    acme: TenantStore, any_redis: Redis
) -> None:
    await acme.create("dup", model="m", labels={"a": "1"})
    await acme.append("dup", [user("hello")])
    before = await snapshot(any_redis)
    with pytest.raises(Conflict):
        await acme.create("dup", model="other", labels={"b": "2"})
    assert await snapshot(any_redis) == before


async def test_append_and_read_history(acme: TenantStore) -> None:
    await acme.create("s1", model="m")
    res = await acme.append("s1", [user("hi"), assistant("hello")])
    assert len(res.event_ids) == 2
    events = await acme.read_events("s1")
    assert [e["type"] for e in events] == ["user.message", "assistant.message"]
    assert [e["id"] for e in events] == res.event_ids
    assert events[0]["timestamp"].endswith("Z") and "T" in events[0]["timestamp"]
    msgs = messages_from_events(events)
    assert [(m.role, m.content) for m in msgs] == [("user", "hi"), ("assistant", "hello")]
    info = await acme.get("s1")
    assert info.event_count == 2
    assert info.message_count == 2
    assert info.last_event_id == res.event_ids[-1]


async def test_event_timestamp_matches_stream_id(acme: TenantStore) -> None:
    from datetime import datetime

    await acme.create("ts", model="m")
    await acme.append("ts", [user("x")])
    for ev in await acme.read_events("ts"):
        ms = int(ev["id"].split("-")[0])
        parsed = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00"))
        assert int(parsed.timestamp() * 1000) == ms


async def test_read_after_before_last_and_paged(acme: TenantStore) -> None:
    await acme.create("p", model="m")
    ids = (await acme.append("p", [user(str(i)) for i in range(10)])).event_ids
    after = await acme.read_events("p", after=ids[4])
    assert [e["data"]["content"] for e in after] == [str(i) for i in range(5, 10)]
    before = await acme.read_events("p", after=ids[0], before=ids[3])
    assert [e["data"]["content"] for e in before] == ["1", "2"]
    last = await acme.last_events("p", 3)
    assert [e["data"]["content"] for e in last] == ["7", "8", "9"]
    page = await acme.read_events("p", limit=4)
    assert len(page) == 4
    exported = [e async for e in acme.iter_events("p", page=3)]
    assert len(exported) == 10
    assert [e["id"] for e in exported] == ids
    newest = await acme.read_events("p", before=ids[6], limit=2, reverse=True)
    assert [e["data"]["content"] for e in newest] == ["5", "4"]


async def test_unicode_and_json_special_content_roundtrip(acme: TenantStore) -> None:
    text = 'quote " backslash \\ newline \n emoji 🚀 zero\u0000 rtl \u202e end'
    await acme.create("u", model="m")
    await acme.append("u", [NewEvent(type="user.message", data={"content": text, "n": [1, None]})])
    ev = (await acme.read_events("u"))[-1]
    assert ev["data"] == {"content": text, "n": [1, None]}


async def test_idempotent_append(acme: TenantStore) -> None:
    await acme.create("i", model="m")
    first = await acme.append("i", [user("once")], idempotency_key="k1", enqueue_turn=True)
    again = await acme.append("i", [user("once")], idempotency_key="k1", enqueue_turn=True)
    assert again.duplicate and again.event_ids == first.event_ids[:1]
    assert len(await acme.read_events("i")) == 1


async def test_unknown_session_errors(acme: TenantStore, any_redis: Redis) -> None:
    before = await snapshot(any_redis)
    with pytest.raises(SessionNotFound):
        await acme.get("nope")
    with pytest.raises(SessionNotFound):
        await acme.append("nope", [user("x")])
    with pytest.raises(SessionNotFound):
        await acme.read_events("nope")
    with pytest.raises(SessionNotFound):
        await acme.delete("nope")
    with pytest.raises(SessionNotFound):
        await acme.update("nope", name="x")
    with pytest.raises(SessionNotFound):
        await acme.set_bookmark("nope", "b")
    assert await snapshot(any_redis) == before


async def test_oversized_event_rejected_and_nothing_lost(
    acme: TenantStore, any_redis: Redis
) -> None:
    await acme.create("big", model="m")
    await acme.append("big", [user("keep me")])
    before = await snapshot(any_redis)
    with pytest.raises(PayloadTooLarge):
        await acme.append("big", [user("ok"), user("x" * 5000)])
    assert await snapshot(any_redis) == before


async def test_bad_ids_rejected_before_any_key(acme: TenantStore, any_redis: Redis) -> None:
    for bad in ["", "a" * 129, "{x}", "a*", "a:b", "a b", "../etc", "a/b", "\x00", "-lead"]:
        with pytest.raises(InvalidInput):
            await acme.create(bad, model="m")
        with pytest.raises(InvalidInput):
            await acme.get(bad)
    assert await any_redis.dbsize() == 0


async def test_concurrent_appends_lose_nothing(acme: TenantStore) -> None:
    await acme.create("busy", model="m")

    async def writer(task: int) -> None:
        for i in range(20):
            await acme.append("busy", [NewEvent(type="user.message", data={"t": task, "i": i})])

    await asyncio.gather(*(writer(t) for t in range(50)))
    events = [e async for e in acme.iter_events("busy") if e["type"] == "user.message"]
    assert len(events) == 1000
    seen = {(e["data"]["t"], e["data"]["i"]) for e in events}
    assert len(seen) == 1000
    for t in range(50):
        assert [e["data"]["i"] for e in events if e["data"]["t"] == t] == list(range(20))
    assert (await acme.get("busy")).event_count == 1000


async def test_every_key_shares_ttl_refreshed_by_append(
    acme: TenantStore, any_redis: Redis
) -> None:
    await acme.create("t", model="m", ttl_seconds=100)
    await acme.append("t", [user("x")], idempotency_key="k", enqueue_turn=True)
    await acme.set_bookmark("t", "b1")
    keys = await tenant_keys(any_redis, acme.prefix)
    session = [k for k in keys if "{acme/t}" in k]
    assert len(session) == 5
    await acme.update("t", ttl_seconds=500)
    ttls = {await any_redis.ttl(k) for k in session}
    assert all(490 <= t <= 500 for t in ttls), ttls
    await acme.update("t", ttl_seconds=50)
    await acme.append("t", [user("y")])
    ttls = {await any_redis.ttl(k) for k in session}
    assert all(45 <= t <= 50 for t in ttls), ttls


async def test_infinite_session_has_no_ttl_ever(acme: TenantStore, any_redis: Redis) -> None:
    await acme.create("forever", model="m", infinite=True)
    await acme.append("forever", [user("x")], idempotency_key="k", enqueue_turn=True)
    await acme.set_bookmark("forever", "b")
    await acme.update("forever", name="renamed", labels={"x": "y"})
    await acme.append("forever", [user("z")])
    keys = [k for k in await tenant_keys(any_redis, acme.prefix) if "{acme/forever}" in k]
    assert len(keys) == 5
    assert {await any_redis.ttl(k) for k in keys} == {-1}
    # and switching a finite session to infinite removes its TTLs
    await acme.create("later", model="m", ttl_seconds=100)
    await acme.set_bookmark("later", "b")
    await acme.update("later", infinite=True)
    keys = [k for k in await tenant_keys(any_redis, acme.prefix) if "{acme/later}" in k]
    assert {await any_redis.ttl(k) for k in keys} == {-1}
    info = await acme.get("later")
    assert info.infinite and info.expires_at is None


async def test_list_newest_first_with_cursor(store: Store, index_shards: int) -> None:
    store.index_shards = index_shards
    acme = store.tenant("acme")
    for i in range(23):
        await acme.create(f"s{i:02d}", model="m")
    await asyncio.sleep(0.005)  # strictly newer than every create
    await acme.append("s05", [user("bump")])
    seen: list[str] = []
    cursor = None
    while True:
        page = await acme.list_sessions(limit=5, cursor=cursor)
        seen += [s.session_id for s in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 23 and len(set(seen)) == 23
    assert seen[0] == "s05"
    mods = [(await acme.get(s)).modified_at for s in seen]
    assert mods == sorted(mods, reverse=True)


async def test_list_label_filter(acme: TenantStore) -> None:
    for i in range(6):
        await acme.create(f"l{i}", model="m", labels={"team": "red" if i % 2 else "blue"})
    page = await acme.list_sessions(limit=10, labels={"team": "red"})
    assert sorted(s.session_id for s in page.data) == ["l1", "l3", "l5"]


async def test_list_hides_expired_and_deleted_before_any_sweep(
    acme: TenantStore, any_redis: Redis
) -> None:
    await acme.create("short", model="m", ttl_seconds=1)
    await acme.create("gone", model="m")
    await acme.create("stays", model="m", infinite=True)
    await acme.delete("gone")
    await asyncio.sleep(1.3)
    listed = [s.session_id for s in (await acme.list_sessions()).data]
    assert listed == ["stays"]
    assert await acme.count_live() == 1
    with pytest.raises(SessionNotFound):
        await acme.get("short")
    # the expired entry is still in the index until the sweep removes it
    assert [sid for sid, _ in await acme.expired_after(2**50, 100)] == ["short"]
    assert await acme.sweep_session("short") == "swept"
    assert await acme.expired_after(2**50, 100) == []
    assert await acme.sweep_session("stays") == "alive"


async def test_delete_removes_every_key_and_index_entry(
    acme: TenantStore, any_redis: Redis
) -> None:
    await acme.create("d", model="m")
    await acme.append("d", [user("x")], idempotency_key="k", enqueue_turn=True)
    await acme.set_bookmark("d", "b")
    await acme.delete("d")
    left = [k for k in await tenant_keys(any_redis, acme.prefix) if "{acme/d}" in k]
    assert left == []
    for key in await tenant_keys(any_redis, acme.prefix):
        if await any_redis.type(key) == "zset" and not key.endswith(":gone"):
            assert await any_redis.zscore(key, "d") is None
    # a Cluster's index remembers the delete for a while (a late index update cannot undo it)
    gone = await any_redis.zscore(acme._index_keys("d").gone, "d")
    assert (gone is not None) == isinstance(any_redis, RedisCluster)
    lifecycle = await any_redis.xrange(K.lifecycle_key("test", "acme"))
    assert [f["type"] for _, f in lifecycle] == ["session.created", "session.deleted"]


async def test_bookmarks(acme: TenantStore) -> None:
    await acme.create("b", model="m")
    await acme.append("b", [user("start design"), assistant("ok")])
    bm = await acme.set_bookmark("b", "design_start", "Beginning of design")
    assert bm.message_count == 2
    await acme.append("b", [user("implementation"), assistant("sure")])
    since = await acme.events_since_bookmark("b", "design_start")
    assert [e["data"]["content"] for e in since] == ["implementation", "sure"]
    assert [b.name for b in await acme.list_bookmarks("b")] == ["design_start"]
    await acme.delete_bookmark("b", "design_start")
    with pytest.raises(BookmarkNotFound):
        await acme.get_bookmark("b", "design_start")
    with pytest.raises(BookmarkNotFound):
        await acme.delete_bookmark("b", "design_start")
    with pytest.raises(InvalidInput):
        await acme.set_bookmark("b", "bad name")


async def test_rename_and_labels(acme: TenantStore) -> None:
    await acme.create("r", model="m")
    info = await acme.update("r", name="Planning", labels={"k": "v"}, summary="A title")
    assert (info.name, info.labels, info.summary) == ("Planning", {"k": "v"}, "A title")
    with pytest.raises(InvalidInput):
        await acme.update("r", labels={"bad key!": "v"})
    assert (await acme.get("r")).labels == {"k": "v"}


async def test_session_limit(store: Store) -> None:
    t = store.tenant("small")
    await t.create("a", model="m", max_sessions=2)
    await t.create("b", model="m", max_sessions=2)
    with pytest.raises(LimitExceeded):
        await t.create("c", model="m", max_sessions=2)
    await t.delete("a")
    await t.create("c", model="m", max_sessions=2)


async def test_tenant_isolation(acme: TenantStore, globex: TenantStore, any_redis: Redis) -> None:
    await acme.create("secret", model="m")
    await acme.append("secret", [user("acme only")])
    await acme.set_bookmark("secret", "bm")
    before = await snapshot(any_redis)
    for sid in ["secret", "acme/secret", "{acme/secret}", "*", "acme:secret"]:
        with pytest.raises((SessionNotFound, InvalidInput)):
            await globex.get(sid)
        with pytest.raises((SessionNotFound, InvalidInput)):
            await globex.read_events(sid)
        with pytest.raises((SessionNotFound, InvalidInput)):
            await globex.append(sid, [user("x")])
        with pytest.raises((SessionNotFound, InvalidInput)):
            await globex.delete(sid)
        with pytest.raises((SessionNotFound, InvalidInput)):
            await globex.update(sid, name="x")
        with pytest.raises((SessionNotFound, InvalidInput)):
            await globex.list_bookmarks(sid)
    assert (await globex.list_sessions()).data == []
    assert await snapshot(any_redis) == before


async def test_bad_cursor_and_limits(acme: TenantStore) -> None:
    with pytest.raises(InvalidInput):
        await acme.list_sessions(cursor="not-a-cursor!")
    with pytest.raises(InvalidInput):
        await acme.list_sessions(limit=0)
    await acme.create("x", model="m")
    with pytest.raises(InvalidInput):
        await acme.read_events("x", after="abc")
    with pytest.raises(InvalidInput):
        await acme.create("y", model="m", ttl_seconds=0)


async def test_stored_event_is_compact(acme: TenantStore, any_redis: Redis) -> None:
    await acme.create("c", model="m")
    await acme.append("c", [user("hello")])
    await acme.append("c", [NewEvent(type="assistant.turn_start", data={"turnId": "1-0"})])
    key = K.session_keys("test", "acme", "c").history
    (item,) = await any_redis.lrange(key, 0, -1)  # the transient turn_start is not history
    ms, _, n = (await acme.read_events("c"))[0]["id"].partition("-")
    assert n == "0"
    assert item == ms + "u" + json.dumps({"content": "hello"}, separators=(",", ":"))
    assert not await any_redis.exists(K.session_keys("test", "acme", "c").events)


async def test_conditional_delete_spares_sessions_in_use(acme: TenantStore) -> None:
    info = await acme.create("c", model="m")
    await asyncio.sleep(0.005)
    await acme.append("c", [user("newer")])
    assert not await acme.delete("c", if_modified_ms=info.modified_ms)
    fresh = await acme.get("c")
    await acme.append("c", [user("turn")], enqueue_turn=True)
    fresh = await acme.get("c")
    assert not await acme.delete("c", if_modified_ms=fresh.modified_ms)  # a turn is pending
    await acme.abort_turns("c", [NewEvent(type="abort")])
    fresh = await acme.get("c")
    assert await acme.delete("c", if_modified_ms=fresh.modified_ms)
    assert not await acme.exists("c")


async def test_turn_complete_and_abort(acme: TenantStore) -> None:
    await acme.create("t", model="m")
    m1 = (await acme.append("t", [user("one")], enqueue_turn=True)).event_ids[0]
    m2 = (await acme.append("t", [user("two")], enqueue_turn=True)).event_ids[0]
    assert await acme.pending_turns("t") == [m1, m2]
    assert await acme.complete_turn("t", m2, [assistant("wrong order")]) is None
    assert await acme.complete_turn("t", m1, [assistant("reply one")]) is not None
    assert await acme.complete_turn("t", m1, [assistant("again")]) is None  # retried: refused
    assert await acme.pending_turns("t") == [m2]
    assert await acme.abort_turns("t", [NewEvent(type="abort")]) is not None
    assert await acme.abort_turns("t", [NewEvent(type="abort")]) is None
    assert await acme.complete_turn("t", m2, [assistant("late")]) is None
    replies = [e for e in await acme.read_events("t") if e["type"] == "assistant.message"]
    assert [e["data"]["content"] for e in replies] == ["reply one"]


async def test_follow_delivers_live_events_through_one_reader(
    acme: TenantStore, any_redis: Redis
) -> None:
    from service.store.live import entry_event

    await acme.create("w", model="m")
    notify = asyncio.Event()
    following = await acme.follow("w", None, notify)
    try:
        # from the start: on a single Redis the live entries after session.start, on a Cluster
        # the history first (its live copies are written by a second call)
        assert following.replay_after == ("0-0" if acme.cluster else None)
        assert not following.resync
        assert following.sub.take() == []

        async def later() -> None:
            await asyncio.sleep(0.05)
            await acme.append("w", [user("arrived"), NewEvent(type="session.idle")])

        task = asyncio.create_task(later())
        async with asyncio.timeout(5):
            await notify.wait()
            while len(following.sub.entries) < 2:
                notify.clear()
                await notify.wait()
        await task
        got = [entry_event(*entry) for entry in following.sub.take()]
        assert [e["type"] for e in got] == ["user.message", "session.idle"]
        assert got[0] == (await acme.read_events("w"))[0]  # the copy keeps its history id
        # resuming from the live id of the idle event (a transient event's id): nothing after it
        resumed = await acme.follow("w", got[1]["id"])
        assert resumed.replay_after is None and not resumed.resync
        assert resumed.sub.take() == []
        resumed.close()
        # from the live id of the user message's copy: the idle event again
        rows = await any_redis.xrange(K.live_key("test", "acme", 0))
        assert [f["s"] for _, f in rows] == ["w"] * 3  # session.start, user.message, idle
        again = await acme.follow("w", "L" + rows[1][0])
        assert [entry_event(*e)["type"] for e in again.sub.take()] == ["session.idle"]
        again.close()
        # an id neither in history nor in the live window: resync
        lost = await acme.follow("w", "1-5")
        assert lost.resync
        lost.close()
        # "0" is "0-0", the start, as in history paging
        for start in ("0", "0-0", "00"):
            first = await acme.follow("w", start)
            assert not first.resync, start
            first.close()
    finally:
        following.close()


async def test_a_window_trimmed_during_the_catch_up_falls_back_to_the_history(
    acme: TenantStore, any_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following from a history id reads the live window from that event's copy (single
    Redis): if the window moves past the copy while the catch-up is read, entries after it
    may be gone too, so the stream replays the history instead of going silently short."""
    from service.store.hub import LiveHub

    await acme.create("trim", model="m")
    first, second = (await acme.append("trim", [user("a"), user("b")])).event_ids
    subscribe = LiveHub.subscribe

    async def trimmed_first(self: LiveHub, key: str, **kw: Any) -> Any:
        monkeypatch.setattr(LiveHub, "subscribe", subscribe)  # once
        ms, _, seq = str((await any_redis.xrevrange(key, count=1))[0][0]).partition("-")
        # the window moved: a's and b's copies are gone
        await any_redis.xtrim(key, minid=f"{ms}-{int(seq) + 1}", approximate=False)
        return await subscribe(self, key, **kw)

    monkeypatch.setattr(LiveHub, "subscribe", trimmed_first)
    following = await acme.follow("trim", first)
    try:
        assert following.replay_after == first  # the history after it, then live entries
        assert [e["id"] for e in await acme.read_events("trim", after=first)] == [second]
    finally:
        following.close()


async def test_a_reader_behind_the_trimmed_window_hands_its_subscribers_a_gap(
    acme: TenantStore, any_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's reader stalls (a paused process, a lost connection) while writers go on
    and the window is trimmed past what it had not read: each subscriber of the stream gets a
    gap marker in place of what it missed (the caller re-reads the history), never silence."""
    from service.store.hub import is_gap
    from service.store.live import entry_event

    await acme.create("slow", model="m")
    await acme.create("busy", model="m")
    key = acme._live_key("slow")
    assert key == acme._live_key("busy")  # one live shard
    gate, parked = asyncio.Event(), asyncio.Event()
    gate.set()
    xread = any_redis.xread

    async def gated(*args: Any, **kw: Any) -> Any:
        if not gate.is_set():
            parked.set()
            await gate.wait()
        return await xread(*args, **kw)

    monkeypatch.setattr(any_redis, "xread", gated)
    notify = asyncio.Event()
    following = await acme.follow("slow", None, notify, from_now=True)

    async def next_entries() -> list[Any]:
        async with asyncio.timeout(10):
            while not (got := following.sub.take()):
                await notify.wait()
                notify.clear()
        return got

    try:
        await acme.append("slow", [user("one")])
        assert [entry_event(*e)["type"] for e in await next_entries()] == ["user.message"]
        gate.clear()
        await acme.append("busy", [user("b1")])  # ends a read in flight, if one is
        async with asyncio.timeout(10):
            await parked.wait()  # the reader stalls
        await acme.append("slow", [user("two")])  # never read: trimmed below
        await acme.append("busy", [user("b2")])
        await acme.append("busy", [user("b3")])
        newest = str((await any_redis.xrevrange(key, count=1))[0][0])
        await any_redis.xtrim(key, minid=newest, approximate=False)
        assert following.sub.take() == []
        gate.set()
        got = await next_entries()
        assert len(got) == 1 and is_gap(got[0])
        await acme.append("slow", [user("three")])  # and on it goes
        assert [entry_event(*e)["data"] for e in await next_entries()] == [{"content": "three"}]
    finally:
        gate.set()
        following.close()


async def test_a_catch_up_longer_than_a_page_is_no_gap(acme: TenantStore) -> None:
    """Resuming from a live position with more than a page of other sessions' entries after
    it reads the whole window in pages: only the first row read can say entries were trimmed."""
    from service.store.live import entry_event

    await acme.create("watched", model="m")
    await acme.create("busy", model="m")
    await acme.append("watched", [user("one")])
    position = (await acme.live_events("watched"))[-1]["id"]
    for _ in range(12):  # 1,200 entries of another session, a window of 10,000
        await acme.append("busy", [NewEvent(type="session.idle") for _ in range(100)])
    notify = asyncio.Event()
    following = await acme.follow("watched", position, notify)
    try:
        assert not following.resync and following.sub.take() == []
        await acme.append("watched", [user("two")])
        async with asyncio.timeout(10):
            while not (got := following.sub.take()):
                await notify.wait()
                notify.clear()
        assert [entry_event(*e)["data"] for e in got] == [{"content": "two"}]
    finally:
        following.close()


def test_a_subscription_that_starts_past_the_reader_drops_what_came_before_its_start() -> None:
    """The reader may lag behind a new subscriber's start: what it then hands on up to the
    start came before it, and would be delivered twice (the caller served it already)."""
    from service.store.hub import Subscription

    sub = Subscription(None, "k", "s", "x", asyncio.Event())  # type: ignore[arg-type]
    sub.floor = (10, 2)
    for entry_id in ("9-5", "10-1", "10-2", "10-3", "11-0"):
        sub.push((entry_id, {"s": "x"}))
    assert [entry_id for entry_id, _ in sub.take()] == ["10-3", "11-0"]


async def test_a_session_made_again_under_its_id_sees_none_of_the_earlier_ones_live_events(
    acme: TenantStore,
) -> None:
    """The tenant's live window outlives a deleted session: the next session of the same id
    neither lists nor follows the earlier one's entries, and a cursor into them resyncs."""
    from service.store.live import entry_event

    await acme.create("again", model="m")
    await acme.append("again", [user("before"), NewEvent(type="session.idle")])
    old_idle = (await acme.live_events("again"))[-1]["id"]
    old_created = await acme.get_meta_field("again", "created")
    await acme.delete("again")
    await acme.create("again", model="m")
    # as if made again within the same millisecond: its incarnation is its microsecond
    await acme._s.redis.hset(acme._session_keys("again").meta, "created", str(old_created))
    assert [e["type"] for e in await acme.live_events("again")] == ["session.start"]
    notify = asyncio.Event()
    assert old_idle.startswith("L")  # a transient event's id is its live cursor
    lost = await acme.follow("again", old_idle, notify)
    try:
        assert lost.resync and lost.sub.take() == []
        notify.clear()
        await acme.append("again", [user("after")])
        async with asyncio.timeout(5):
            await notify.wait()
        assert [entry_event(*e)["data"] for e in lost.sub.take()] == [{"content": "after"}]
    finally:
        lost.close()


async def test_entries_an_earlier_version_wrote_for_a_session_are_its_own(
    acme: TenantStore,
) -> None:
    """While versions are mixed in a rolling upgrade, an API or worker that keeps no ``inc``
    names a session's live entries by its ``created`` ms: they are that session's all the same."""
    await acme.create("mixed", model="m")
    created = str(await acme.get_meta_field("mixed", "created"))
    await acme._publish("mixed", [("", "session.idle{}")], created)  # as an earlier version
    notify = asyncio.Event()
    following = await acme.follow("mixed", None, notify)
    try:
        assert [e["type"] for e in await acme.live_events("mixed")] == [
            "session.start",
            "session.idle",
        ]
        notify.clear()
        await acme._publish("mixed", [("", "session.idle{}")], created)
        async with asyncio.timeout(5):
            await notify.wait()
        assert following.sub.take()
    finally:
        following.close()


async def test_item_pop_and_clear_are_live_events_of_the_session(acme: TenantStore) -> None:
    """Storage-only writes reach subscribers as the session's live events (on a Cluster they
    are published after their script, with the incarnation it answered)."""
    from service.models import SessionMode

    await acme.create("box", model="m", mode=SessionMode.STORE)
    ids = (await acme.append_items("box", [{"role": "user", "content": "a"}] * 2)).event_ids
    assert (await acme.pop_item("box") or ("",))[0] == ids[1]
    assert await acme.clear_items("box") == 1
    live = [(e["type"], e["data"]) for e in await acme.live_events("box")]
    assert live[-2:] == [("item.popped", {"id": ids[1]}), ("items.cleared", {"count": 1})]


async def test_live_entries_published_for_a_deleted_session_belong_to_no_later_one(
    acme: TenantStore,
) -> None:
    """On a Cluster a write's live copies are published after its script, with the incarnation
    the script answered: when the session is deleted in between, they stay the old one's."""
    await acme.create("late", model="m")
    incarnation = str(await acme.get_meta_field("late", "inc"))
    await acme.delete("late")
    await acme._publish("late", [("", "session.idle{}")], incarnation)
    await acme.create("late", model="m")  # (within the same millisecond, often)
    assert [e["type"] for e in await acme.live_events("late")] == ["session.start"]


async def test_cluster_slots_session_together_index_spread(redis_cluster_nodes: str) -> None:
    """All keys of one session share a slot; a tenant's index shards do not."""

    from tests.conftest import cluster_client

    client: RedisCluster = await cluster_client(redis_cluster_nodes)
    try:
        sk = K.session_keys("test", "acme", "user-42-main")
        slots = {await client.cluster_keyslot(k) for k in sk.all()}
        assert len(slots) == 1
        shard_slots = {
            await client.cluster_keyslot(K.index_keys("test", "acme", n).idx) for n in range(16)
        }
        assert len(shard_slots) == 16
        nodes = {
            client.get_node_from_key(K.index_keys("test", "acme", n).idx).name for n in range(16)
        }
        assert len(nodes) == 3  # a large tenant's index spreads over every primary
        for n in range(16):
            ik = K.index_keys("test", "acme", n)
            assert await client.cluster_keyslot(ik.idx) == await client.cluster_keyslot(ik.exp)
    finally:
        await client.aclose()


async def test_delete_of_expired_session_leaves_the_expiry_event_to_the_sweep(
    acme: TenantStore, any_redis: Redis
) -> None:
    await acme.create("brief", model="m", ttl_seconds=1)
    await asyncio.sleep(1.2)
    with pytest.raises(SessionNotFound):
        await acme.delete("brief")
    assert await acme.sweep_session("brief") == "swept"
    assert await acme.sweep_session("brief") == "gone"
    lifecycle = await any_redis.xrange(K.lifecycle_key("test", "acme"))
    assert [f["type"] for _, f in lifecycle] == ["session.created", "session.expired"]
