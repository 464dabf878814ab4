"""Sessions written by the earlier layout (one stream of every event) stay readable: they convert
on first use, or ahead of time with ``sessionctl migrate`` (``--dry-run`` counts only)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

from redis.asyncio import Redis

from service import keys as K
from service.config import Settings
from service.models import NewEvent
from service.runtime import build_runtime
from tests.cleanup.conftest import PREFIX
from tests.legacy_layout import LegacyWriter

TENANT = "acme"


async def _old_session(w: LegacyWriter, sid: str) -> dict[str, Any]:
    """A session as the earlier version left it: a finished turn (with streamed deltas), a
    pending one, a bookmark on a transient event, and a compaction point."""
    await w.create(sid)
    (u1,) = await w.append(
        sid,
        [("user.message", {"content": "first"})],
        idem="k1",
        op="enqueue",
        counters="messages=1",
    )
    await w.append(sid, [("assistant.turn_start", {"turnId": u1})], op="guard", turn=u1)
    await w.append(sid, [("assistant.message_delta", {"deltaContent": "hel", "reply_to": u1})])
    a1, _, idle = await w.append(
        sid,
        [
            ("assistant.message", {"content": "hello", "reply_to": u1, "model": "m"}),
            ("assistant.turn_end", {"turnId": u1}),
            ("session.idle", {}),
        ],
        op="complete",
        turn=u1,
        counters="messages=1",
    )
    await w.bookmark(sid, "after-first")  # points at the session.idle event
    await w.redis.hset(K.session_keys(PREFIX, TENANT, sid).meta, "compacted_through", u1)
    (u2,) = await w.append(
        sid,
        [("user.message", {"content": "second"})],
        idem="k2",
        op="enqueue",
        counters="messages=1",
    )
    return {"u1": u1, "a1": a1, "idle": idle, "u2": u2}


async def _lazy(url: str) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    w = LegacyWriter(redis, PREFIX, TENANT)
    old = await _old_session(w, "read-first")
    await _old_session(w, "write-first")
    await _old_session(w, "meta-first")
    rt = build_runtime(Settings(redis_url=url, key_prefix=PREFIX), redis)
    ts = rt.store.tenant(TENANT)
    try:
        # a read converts: the history holds the durable events, with new ids
        events = await ts.read_events("read-first")
        assert [(e["type"], e["data"].get("content")) for e in events] == [
            ("user.message", "first"), ("assistant.message", "hello"), ("user.message", "second")
        ]  # fmt: skip
        ids = [e["id"] for e in events]
        # ordinals start past the stream's 8 entries: no new id equals an old one
        assert [int(i.split("-")[1]) for i in ids] == [8, 9, 10]
        assert [i.split("-")[0] for i in ids] == [old[k].split("-")[0] for k in ("u1", "a1", "u2")]
        assert events[1]["data"]["reply_to"] == ids[0]  # the reply names its prompt's new id
        keys = K.session_keys(PREFIX, TENANT, "read-first")
        assert not await redis.exists(keys.events)
        info = await ts.get("read-first")
        assert info.event_count == 3 and info.message_count == 3
        assert info.last_event_id == ids[2]
        assert info.compacted_through == ids[0]
        # every reference moved to the new ids: pending turn, idempotency, bookmark
        assert await ts.pending_turns("read-first") == [ids[2]]
        again = await ts.append(
            "read-first", [NewEvent("user.message", {"content": "second"})], idempotency_key="k2"
        )
        assert again.duplicate and again.event_ids == [ids[2]]
        mark = await ts.get_bookmark("read-first", "after-first")
        assert mark.event_id == ids[1]  # the idle event's place: after the reply
        assert [e["id"] for e in await ts.events_since_bookmark("read-first", "after-first")] == [
            ids[2]
        ]
        # the turn guard works on the converted session
        done = await ts.complete_turn(
            "read-first", ids[2], [NewEvent("assistant.message", {"content": "hi again"})]
        )
        assert done is not None and await ts.pending_turns("read-first") == []
        ttl = await redis.pttl(keys.history)
        assert 3_000_000 < ttl <= 3_600_000

        # so does a read of the bookmarks: the messages after one are those after its event
        await _old_session(w, "marks-first")
        mark = await ts.get_bookmark("marks-first", "after-first")
        assert not await redis.exists(K.session_keys(PREFIX, TENANT, "marks-first").events)
        after_mark, _, _ = await ts.read_messages("marks-first", after=mark.event_id)
        assert [m.content for m in after_mark] == ["second"]

        # so does a read of the metadata: an export made next agrees with it
        info = await ts.get("meta-first")
        assert not await redis.exists(K.session_keys(PREFIX, TENANT, "meta-first").events)
        meta_ids = [e["id"] for e in await ts.read_events("meta-first")]
        assert info.event_count == 3 and info.last_event_id == meta_ids[-1]

        # a write converts too, before it appends
        res = await ts.append("write-first", [NewEvent("user.message", {"content": "third"})])
        events = await ts.read_events("write-first")
        assert [e["data"].get("content") for e in events] == ["first", "hello", "second", "third"]
        assert res.event_ids == [events[-1]["id"]] and events[-1]["id"].endswith("-11")
    finally:
        await rt.close()


async def _same_ms(url: str) -> None:
    """A conversation the earlier layout wrote in one millisecond: its ids' sequence numbers
    counted every event, so none of them matches an ordinal; a page after any of them (or
    before it) leaves out none of the items that came after (or before) it."""
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    w = LegacyWriter(redis, PREFIX, TENANT)
    await w.create("burst")
    written = [
        ("user.message", {"content": "q1"}),
        ("assistant.turn_start", {"turnId": "t"}),
        ("assistant.message", {"content": "a1"}),
        ("assistant.turn_end", {"turnId": "t"}),
        ("session.idle", {}),
        ("user.message", {"content": "q2"}),
        ("assistant.message", {"content": "a2"}),
    ]
    old = await w.append("burst", written)
    assert len({i.split("-")[0] for i in old}) == 1  # one script: one millisecond
    rt = build_runtime(Settings(redis_url=url, key_prefix=PREFIX), redis)
    ts = rt.store.tenant(TENANT)
    try:
        await ts.migrate("burst")
        durable = [d["content"] for t, d in written if "content" in d]
        for k, old_id in enumerate(old):
            later = [d["content"] for t, d in written[k + 1 :] if "content" in d]
            earlier = [d["content"] for t, d in written[:k] if "content" in d]
            after = [e["data"]["content"] for e in await ts.read_events("burst", after=old_id)]
            before = [e["data"]["content"] for e in await ts.read_events("burst", before=old_id)]
            assert set(later) <= set(after) and set(earlier) <= set(before), (k, after, before)
            assert after == durable[len(durable) - len(after) :]  # a tail, in order
        messages, _, _ = await ts.read_messages("burst", after=old[4])  # after the idle event
        assert [m.content for m in messages][-2:] == ["q2", "a2"]
    finally:
        await rt.close()


async def _references(url: str) -> None:
    """The ids the service's own events hold (a reply's and an error's ``reply_to``, a
    compaction's ``through``) move to the new ids; a message's text that spells such a field
    stays as written."""
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    w = LegacyWriter(redis, PREFIX, TENANT)
    await w.create("refs")
    text = 'quoting "reply_to":"1-0" in a prompt'
    (u1,) = await w.append("refs", [("user.message", {"content": text})])
    (a1,) = await w.append("refs", [("assistant.message", {"content": "a", "reply_to": u1})])
    await w.append("refs", [("session.error", {"message": "x", "reply_to": u1})])
    await w.append("refs", [("session.compaction_complete", {"through": a1, "summary": "s"})])
    rt = build_runtime(Settings(redis_url=url, key_prefix=PREFIX), redis)
    try:
        events = await rt.store.tenant(TENANT).read_events("refs")
        ids = [e["id"] for e in events]
        assert events[0]["data"]["content"] == text
        assert [e["data"].get("reply_to") for e in events[1:3]] == [ids[0], ids[0]]
        assert events[3]["data"]["through"] == ids[1]
    finally:
        await rt.close()


def test_ids_in_the_services_own_events_move_to_the_new_ids(redis_server_url: str) -> None:
    asyncio.run(_references(redis_server_url))


def test_a_page_after_an_id_of_the_earlier_layout_skips_nothing(redis_server_url: str) -> None:
    asyncio.run(_same_ms(redis_server_url))


def test_sessions_of_the_earlier_layout_convert_on_first_use(redis_server_url: str) -> None:
    asyncio.run(_lazy(redis_server_url))


async def _seed_old(url: str, n: int) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        await redis.flushall()
        w = LegacyWriter(redis, PREFIX, TENANT)
        for i in range(n):
            await _old_session(w, f"old{i}")
        rt = build_runtime(Settings(redis_url=url, key_prefix=PREFIX), redis)
        await rt.store.tenant(TENANT).create("new", model="m")  # nothing to convert
        await rt.store.hub.close()
    finally:
        await redis.aclose()


async def _dump(url: str) -> dict[str, Any]:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, Any] = {}
        for key in sorted([k async for k in redis.scan_iter(match=f"{PREFIX}:{TENANT}:*")]):
            kind = await redis.type(key)
            if kind == "stream":
                out[key] = len(await redis.xrange(key))
            elif kind == "hash":
                out[key] = await redis.hgetall(key)
            elif kind == "list":
                out[key] = await redis.lrange(key, 0, -1)
            else:
                out[key] = kind
        return out
    finally:
        await redis.aclose()


def _migrate(*argv: str) -> tuple[int, dict[str, Any]]:
    from service.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["migrate", "--json", "--tenant", TENANT, *argv])
    return code, json.loads(out.getvalue())


def test_sessionctl_migrate_dry_run_then_convert(cli_env: str) -> None:
    asyncio.run(_seed_old(cli_env, 3))
    before = asyncio.run(_dump(cli_env))
    code, report = _migrate("--dry-run")
    assert code == 0
    assert report == {
        "dry_run": True,
        "tenants": [{"tenant": TENANT, "sessions": 4, "converted": 3, "items": 0}],
    }
    assert asyncio.run(_dump(cli_env)) == before  # a dry run changes nothing
    code, report = _migrate()
    assert code == 0
    assert report["tenants"] == [{"tenant": TENANT, "sessions": 4, "converted": 3, "items": 9}]
    after = asyncio.run(_dump(cli_env))
    assert not [k for k in after if k.endswith(":events")]
    for i in range(3):
        items = after[K.session_keys(PREFIX, TENANT, f"old{i}").history]
        assert [item.lstrip("0123456789")[0] for item in items] == ["u", "a", "u"]
    code, report = _migrate()  # a second run finds nothing left
    assert report["tenants"][0]["converted"] == 0
