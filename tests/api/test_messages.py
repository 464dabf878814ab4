"""Messages, turns, events, bookmarks and export over HTTP."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import httpx
from redis.asyncio import Redis

from service.config import Settings
from service.runtime import Runtime
from tests.api.conftest import PREFIX, TenantKey, snapshot
from workers.queue import QueueNames


async def new_session(client: httpx.AsyncClient, who: TenantKey, sid: str = "s1") -> str:
    r = await client.post("/v1/sessions", json={"session_id": sid}, headers=who.headers)
    assert r.status_code == 201, r.text
    return sid


NAMES = QueueNames.of(Settings(key_prefix=PREFIX))


async def queued_jobs(redis: Redis) -> list[str]:
    return list(await redis.zrange(NAMES.queue, 0, -1))


async def test_send_appends_and_enqueues_one_turn(
    client: httpx.AsyncClient, acme: TenantKey, real_redis: Redis
) -> None:
    sid = await new_session(client, acme)
    r = await client.post(
        f"/v1/sessions/{sid}/messages", json={"prompt": "hi"}, headers=acme.headers
    )
    assert r.status_code == 202, r.text
    message_id = r.json()["message_id"]
    assert r.json()["duplicate"] is False
    assert await queued_jobs(real_redis) == [NAMES.turn_job("acme", sid, message_id)]

    r = await client.get(f"/v1/sessions/{sid}/messages", headers=acme.headers)
    assert r.status_code == 200
    assert r.json()["data"] == [
        {
            "role": "user",
            "content": "hi",
            "id": message_id,
            "timestamp": r.json()["data"][0]["timestamp"],
        }
    ]
    r = await client.get(
        f"/v1/sessions/{sid}/messages", params={"after": message_id}, headers=acme.headers
    )
    assert r.json()["data"] == []


async def test_idempotency_key_returns_same_message_and_one_job(
    client: httpx.AsyncClient, acme: TenantKey, real_redis: Redis
) -> None:
    sid = await new_session(client, acme)
    headers = {**acme.headers, "Idempotency-Key": "req-1"}
    first = await client.post(
        f"/v1/sessions/{sid}/messages", json={"prompt": "hi"}, headers=headers
    )
    again = await client.post(
        f"/v1/sessions/{sid}/messages", json={"prompt": "hi"}, headers=headers
    )
    assert first.status_code == again.status_code == 202
    assert again.json() == {"message_id": first.json()["message_id"], "duplicate": True}
    assert len(await queued_jobs(real_redis)) == 1
    r = await client.get(f"/v1/sessions/{sid}/messages", headers=acme.headers)
    assert len(r.json()["data"]) == 1
    other = await client.post(
        f"/v1/sessions/{sid}/messages",
        json={"prompt": "hi"},
        headers={**acme.headers, "Idempotency-Key": "req-2"},
    )
    assert other.json()["message_id"] != first.json()["message_id"]
    assert len(await queued_jobs(real_redis)) == 2
    bad = await client.post(
        f"/v1/sessions/{sid}/messages",
        json={"prompt": "hi"},
        headers={**acme.headers, "Idempotency-Key": "x" * 201},
    )
    assert bad.status_code == 422


async def test_send_to_missing_session_is_404_and_enqueues_nothing(
    client: httpx.AsyncClient, acme: TenantKey, real_redis: Redis
) -> None:
    r = await client.post("/v1/sessions/nope/messages", json={"prompt": "hi"}, headers=acme.headers)
    assert r.status_code == 404
    assert await queued_jobs(real_redis) == []


async def test_prompt_limits(client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey) -> None:
    sid = await new_session(client, acme)
    url = f"/v1/sessions/{sid}/messages"
    r = await client.post(url, json={"prompt": ""}, headers=acme.headers)
    assert r.status_code == 422
    tenant = await runtime.tenants.get("acme")
    tenant.limits.max_message_bytes = 100
    await runtime.tenants.save(tenant)
    r = await client.post(url, json={"prompt": "é" * 51}, headers=acme.headers)  # 102 bytes
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["limit"] == 100
    r = await client.post(url, json={"prompt": "é" * 50}, headers=acme.headers)
    assert r.status_code == 202


async def test_a_session_holds_at_most_max_pending_turns_waiting(
    client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey, real_redis: Redis
) -> None:
    """One more send than the session may have waiting is a 429 that stores and queues nothing;
    a retry of an accepted send is still its duplicate, and a slot frees once turns end."""
    runtime.store.max_pending_turns = 3
    sid = await new_session(client, acme)
    url = f"/v1/sessions/{sid}/messages"
    sent = [
        await client.post(
            url, json={"prompt": f"p{i}"}, headers={**acme.headers, "Idempotency-Key": f"k{i}"}
        )
        for i in range(3)
    ]
    assert [r.status_code for r in sent] == [202] * 3
    data_before, jobs_before = await snapshot(runtime.redis), await queued_jobs(real_redis)
    r = await client.post(url, json={"prompt": "one too many"}, headers=acme.headers)
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["limit"] == "pending_turns" and "3 turns waiting" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert await snapshot(runtime.redis) == data_before
    assert await queued_jobs(real_redis) == jobs_before
    again = await client.post(
        url, json={"prompt": "p1"}, headers={**acme.headers, "Idempotency-Key": "k1"}
    )
    assert again.status_code == 202 and again.json() == {**sent[1].json(), "duplicate": True}
    await client.post(f"/v1/sessions/{sid}/abort", headers=acme.headers)
    r = await client.post(url, json={"prompt": "after the abort"}, headers=acme.headers)
    assert r.status_code == 202, r.text


async def test_body_over_the_request_limit_is_413_before_parsing(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    sid = await new_session(client, acme)
    url = f"/v1/sessions/{sid}/messages"
    big = json.dumps({"prompt": "x" * (16 * 1024 + 70 * 1024)}).encode()
    headers = {**acme.headers, "Content-Type": "application/json"}
    r = await client.post(url, content=big, headers=headers)
    assert r.status_code == 413
    assert r.json()["title"] == "Payload too large"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = await client.post(url, content=chunks(), headers=headers)  # chunked: no Content-Length
    assert r.status_code == 413

    async def small() -> AsyncIterator[bytes]:
        yield b'{"prompt":'
        yield b'"chunked"}'

    r = await client.post(url, content=small(), headers=headers)
    assert r.status_code == 202, r.text


async def test_wrong_content_type_is_415_and_bad_json_400(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    sid = await new_session(client, acme)
    url = f"/v1/sessions/{sid}/messages"
    r = await client.post(
        url, content=b"prompt=hi", headers={**acme.headers, "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/unsupported-media-type"
    assert "application/json" in r.json()["detail"]
    r = await client.post(url, content=b'{"prompt": "hi"}', headers=acme.headers)  # no type
    assert r.status_code == 415
    r = await client.post(
        url,
        content=b'{"prompt": "hi",',
        headers={**acme.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["title"] == "Malformed JSON"
    assert "position" in r.json()["detail"]
    r = await client.post(url, json=["not", "an", "object"], headers=acme.headers)
    assert r.status_code == 422
    r = await client.post(url, content=b"", headers=acme.headers)
    assert r.status_code == 422


async def test_abort(client: httpx.AsyncClient, acme: TenantKey) -> None:
    sid = await new_session(client, acme)
    r = await client.post(f"/v1/sessions/{sid}/abort", headers=acme.headers)
    assert r.status_code == 202 and r.json() == {"aborted": False}
    await client.post(f"/v1/sessions/{sid}/messages", json={"prompt": "hi"}, headers=acme.headers)
    r = await client.post(f"/v1/sessions/{sid}/abort", headers=acme.headers)
    assert r.json() == {"aborted": True}
    r = await client.get(
        f"/v1/sessions/{sid}/events", params={"reverse": "true", "limit": 2}, headers=acme.headers
    )
    assert [e["type"] for e in r.json()["data"]] == ["abort", "user.message"]  # idle: live only
    r = await client.post("/v1/sessions/nope/abort", headers=acme.headers)
    assert r.status_code == 404


async def test_events_page(client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey) -> None:
    sid = await new_session(client, acme)
    for text in ("zero", "one", "two", "three"):
        await client.post(
            f"/v1/sessions/{sid}/messages", json={"prompt": text}, headers=acme.headers
        )
    r = await client.get(f"/v1/sessions/{sid}/events", headers=acme.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    events = r.json()["data"]
    assert [e["type"] for e in events] == ["user.message"] * 4  # session.start is live only
    assert set(events[1]) == {"id", "timestamp", "type", "data"}
    assert events == await runtime.store.tenant("acme").read_events(sid)
    r = await client.get(
        f"/v1/sessions/{sid}/events",
        params={"after": events[0]["id"], "before": events[3]["id"]},
        headers=acme.headers,
    )
    assert [e["data"]["content"] for e in r.json()["data"]] == ["one", "two"]
    r = await client.get(
        f"/v1/sessions/{sid}/events", params={"after": "not-an-id"}, headers=acme.headers
    )
    assert r.status_code == 422
    r = await client.get(
        f"/v1/sessions/{sid}/events", params={"live": "true"}, headers=acme.headers
    )
    assert [e["type"] for e in r.json()["data"]] == ["session.start"] + ["user.message"] * 4
    start_id = r.json()["data"][0]["id"]
    assert start_id.startswith("L")  # a transient event's id: its live cursor
    for path in ("events", "messages"):  # the history holds no live event: said, not guessed
        r = await client.get(
            f"/v1/sessions/{sid}/{path}", params={"after": start_id}, headers=acme.headers
        )
        assert r.status_code == 422 and "a live event's id" in r.json()["detail"], r.text
    r = await client.get("/v1/sessions/nope/events", headers=acme.headers)
    assert r.status_code == 404


async def test_bookmarks(client: httpx.AsyncClient, acme: TenantKey) -> None:
    sid = await new_session(client, acme)
    h = acme.headers
    base = f"/v1/sessions/{sid}/bookmarks"
    await client.post(f"/v1/sessions/{sid}/messages", json={"prompt": "before"}, headers=h)
    r = await client.put(f"{base}/mark", json={"description": "here"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "mark" and r.json()["description"] == "here"
    assert r.json()["message_count"] == 1
    r = await client.put(f"{base}/plain", headers=h)  # no body at all
    assert r.status_code == 200 and r.json()["description"] == ""
    await client.post(f"/v1/sessions/{sid}/messages", json={"prompt": "after"}, headers=h)

    r = await client.get(base, headers=h)
    assert sorted(b["name"] for b in r.json()["data"]) == ["mark", "plain"]
    r = await client.get(f"{base}/mark", headers=h)
    assert r.json()["description"] == "here"
    r = await client.get(f"{base}/mark/messages", headers=h)
    assert [m["content"] for m in r.json()["data"]] == ["after"]
    r = await client.get(f"{base}/mark/events", headers=h)
    assert [e["type"] for e in r.json()["data"]] == ["user.message"]

    r = await client.delete(f"{base}/mark", headers=h)
    assert r.status_code == 204
    for method, url in (
        ("GET", f"{base}/mark"),
        ("DELETE", f"{base}/mark"),
        ("GET", f"{base}/mark/events"),
    ):
        r = await client.request(method, url, headers=h)
        assert r.status_code == 404 and r.json()["type"] == "/problems/bookmark-not-found"
    r = await client.put(f"{base}/bad:name", json={}, headers=h)
    assert r.status_code == 422
    r = await client.put(f"{base}/x", json={"description": "d", "extra": 1}, headers=h)
    assert r.status_code == 422


async def test_export_json_and_jsonl(client: httpx.AsyncClient, acme: TenantKey) -> None:
    sid = await new_session(client, acme)
    h = acme.headers
    await client.post(f"/v1/sessions/{sid}/messages", json={"prompt": "line\nbreak"}, headers=h)
    await client.put(f"/v1/sessions/{sid}/bookmarks/b1", json={}, headers=h)
    events = (await client.get(f"/v1/sessions/{sid}/events", headers=h)).json()["data"]

    r = await client.get(f"/v1/sessions/{sid}/export", headers=h)
    assert r.status_code == 200
    doc = r.json()
    assert doc["session"]["session_id"] == sid
    assert [b["name"] for b in doc["bookmarks"]] == ["b1"]
    assert doc["events"] == events

    r = await client.get(f"/v1/sessions/{sid}/export", params={"format": "jsonl"}, headers=h)
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0]["session"]["session_id"] == sid
    assert lines[1:] == events

    r = await client.get(f"/v1/sessions/{sid}/export", params={"format": "xml"}, headers=h)
    assert r.status_code == 422
    r = await client.get("/v1/sessions/nope/export", headers=h)
    assert r.status_code == 404


async def test_pages_of_any_size_give_every_message_once(
    client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey
) -> None:
    """Messages in runs of every density among other stored events: followed page by page, at
    any ``limit``, the pages give each message once, in order."""
    from service.models import NewEvent

    rng = random.Random(7)
    sid = await new_session(client, acme)
    store = runtime.store.tenant("acme")
    expected: list[str] = []
    stored = 0
    while stored < 3_000:
        if rng.random() < 0.3:  # a run of other events
            run = rng.choice([1, 5, 50, 400, 1_200])
            await store.append(sid, [NewEvent(type="session.error", data={"message": "x"})] * run)
        else:
            run = rng.choice([1, 3, 80, 300])
            texts = [f"m{len(expected) + i}" for i in range(run)]
            roles = [rng.choice(["user.message", "assistant.message"]) for _ in texts]
            await store.append(
                sid,
                [NewEvent(type=r, data={"content": t}) for r, t in zip(roles, texts, strict=True)],
            )
            expected += texts
        stored += run
    for limit in (1, 7, 100, 333, 1_000):
        got: list[str] = []
        params: dict[str, object] = {"limit": limit}
        while True:
            r = await client.get(
                f"/v1/sessions/{sid}/messages", params=params, headers=acme.headers
            )
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["data"]) <= limit
            got += [m["content"] for m in page["data"]]
            if not page["next_cursor"]:
                break
            params["after"] = page["next_cursor"]
        assert got == expected, limit


async def test_message_pages_count_messages_and_skip_other_events(
    client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey
) -> None:
    from service.models import NewEvent

    sid = await new_session(client, acme)
    store = runtime.store.tenant("acme")
    await store.append(sid, [NewEvent(type="user.message", data={"content": "first"})])
    for _ in range(3):  # 1,500 stored events between two messages, and deltas (not stored)
        await store.append(sid, [NewEvent(type="session.error", data={"message": "x"})] * 500)
        await store.append(
            sid, [NewEvent(type="assistant.message_delta", data={"deltaContent": "x"})] * 50
        )
    for text in ("second", "third", "fourth"):
        await store.append(sid, [NewEvent(type="user.message", data={"content": text})])

    async def page(**params: object) -> dict[str, object]:
        r = await client.get(f"/v1/sessions/{sid}/messages", params=params, headers=acme.headers)
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    first = await page(limit=2)
    assert [m["content"] for m in first["data"]] == ["first", "second"]  # type: ignore[index,union-attr]
    rest = await page(limit=2, after=first["next_cursor"])
    assert [m["content"] for m in rest["data"]] == ["third", "fourth"]  # type: ignore[index,union-attr]
    assert rest["next_cursor"] is None  # a full page that reaches the end says so
    end = await page(limit=2, after=rest["data"][-1]["id"])  # type: ignore[index]
    assert end == {"data": [], "next_cursor": None}
    whole = await page()
    assert len(whole["data"]) == 4 and whole["next_cursor"] is None  # type: ignore[arg-type]
