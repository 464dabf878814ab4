"""Storage-only sessions over HTTP: items appended, read, popped and cleared, on a single Redis and
on the Cluster; nothing ever queues a turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from service.runtime import Runtime
from tests.api.conftest import TenantKey
from tests.api.test_messages import queued_jobs

ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city":"Paris"}',
        "id": "fc_1",
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "18°C, sunny"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "…"}]},
    {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": "18°C and sunny.", "annotations": []}],
    },
]


async def store_session(
    client: httpx.AsyncClient, who: TenantKey, sid: str = "s1", **fields: Any
) -> str:
    r = await client.post(
        "/v1/sessions", json={"session_id": sid, "mode": "store", **fields}, headers=who.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["mode"] == "store"
    return sid


async def items_of(client: httpx.AsyncClient, who: TenantKey, sid: str, **params: Any) -> Any:
    r = await client.get(f"/v1/sessions/{sid}/items", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_items_pass_through_in_order_latest_n_pop_and_clear(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    sid = await store_session(client, acme, labels={"team": "a"}, ttl_seconds=600)
    h = acme.headers
    r = await client.post(f"/v1/sessions/{sid}/items", json={"items": ITEMS}, headers=h)
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert len(ids) == len(set(ids)) == 5 and r.json()["duplicate"] is False

    page = await items_of(client, acme, sid)
    assert page == {"data": ITEMS, "ids": ids}
    assert await items_of(client, acme, sid, limit=2) == {"data": ITEMS[-2:], "ids": ids[-2:]}
    r = await client.get(f"/v1/sessions/{sid}/messages", headers=h)
    assert [(m["role"], m["content"], m["id"]) for m in r.json()["data"]] == [
        ("user", "What is the weather in Paris?", ids[0]),
        ("assistant", "18°C and sunny.", ids[4]),
    ]
    older = await items_of(client, acme, sid, limit=2, before=ids[3])
    assert older == {"data": ITEMS[1:3], "ids": ids[1:3]}

    r = await client.post(f"/v1/sessions/{sid}/items/pop", headers=h)
    assert r.json() == {"id": ids[-1], "item": ITEMS[-1]}
    assert (await items_of(client, acme, sid))["data"] == ITEMS[:-1]
    # the next item never takes the popped item's id, and ids keep the order
    r = await client.post(f"/v1/sessions/{sid}/items", json={"items": [{"n": 1}]}, headers=h)
    new_id = r.json()["ids"][0]
    assert new_id != ids[-1]
    assert int(new_id.split("-")[0]) > int(ids[-1].split("-")[0])
    info = (await client.get(f"/v1/sessions/{sid}", headers=h)).json()
    assert info["last_event_id"] == new_id and info["event_count"] == 5

    r = await client.delete(f"/v1/sessions/{sid}/items", headers=h)
    assert r.json() == {"removed": 5}
    assert await items_of(client, acme, sid) == {"data": [], "ids": []}
    r = await client.post(f"/v1/sessions/{sid}/items/pop", headers=h)
    assert r.json() == {"id": None, "item": None}
    info = (await client.get(f"/v1/sessions/{sid}", headers=h)).json()
    listed = (await client.get("/v1/sessions", headers=h)).json()["data"]
    assert [(s["session_id"], s["mode"]) for s in listed] == [(sid, "store")]
    assert info["labels"] == {"team": "a"} and info["ttl_seconds"] == 600
    assert info["mode"] == "store" and info["event_count"] == 0
    r = await client.post(f"/v1/sessions/{sid}/items", json={"items": ITEMS[:1]}, headers=h)
    assert r.json()["ids"][0] not in [*ids, new_id]
    assert (await items_of(client, acme, sid))["data"] == ITEMS[:1]


async def test_a_storage_only_session_never_runs_a_turn(
    client: httpx.AsyncClient, acme: TenantKey, real_redis: Redis
) -> None:
    sid = await store_session(client, acme)
    h = {**acme.headers, "Idempotency-Key": "k1"}
    r = await client.post(f"/v1/sessions/{sid}/messages", json={"prompt": "hi"}, headers=h)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "storage-only" in r.json()["detail"]
    assert await queued_jobs(real_redis) == []
    assert await items_of(client, acme, sid) == {"data": [], "ids": []}
    # the refused send did not take the key
    r = await client.post(f"/v1/sessions/{sid}/items", json={"items": [{"a": 1}]}, headers=h)
    assert r.json()["duplicate"] is False


async def test_items_on_a_session_that_runs_turns_are_409(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    r = await client.post("/v1/sessions", json={"session_id": "t1"}, headers=acme.headers)
    assert r.json()["mode"] == "turns"
    base = "/v1/sessions/t1/items"
    for method, url, body in [
        ("POST", base, {"items": [{"a": 1}]}),
        ("GET", base, None),
        ("GET", base + "?before=1-0", None),
        ("POST", base + "/pop", None),
        ("DELETE", base, None),
    ]:
        r = await client.request(method, url, json=body, headers=acme.headers)
        assert r.status_code == 409, (method, url, r.text)
    for method, url in [
        ("POST", "/v1/sessions/nope/items/pop"),
        ("GET", "/v1/sessions/nope/items"),
    ]:
        r = await client.request(method, url, headers=acme.headers)
        assert r.status_code == 404


async def test_bad_items_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    sid = await store_session(client, acme)
    url, h = f"/v1/sessions/{sid}/items", acme.headers
    big = {"content": "x" * (16 * 1024)}
    r = await client.post(url, json={"items": [{"a": 1}, big]}, headers=h)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    for body in (
        {"items": []},
        {"items": [1, 2]},
        {"items": [{"a": 1}], "extra": 1},
        {},
        {"items": [{}] * 1001},
    ):
        r = await client.post(url, json=body, headers=h)
        assert r.status_code == 422, body
    for params in ({"limit": 0}, {"limit": 10_001}, {"before": "nope"}):
        r = await client.get(url, params=params, headers=h)
        assert r.status_code == 422, params
    r = await client.post(url, json={"items": [{"a": 1}]}, headers={**h, "Idempotency-Key": ""})
    assert r.status_code == 422
    assert await items_of(client, acme, sid) == {"data": [], "ids": []}


async def test_idempotent_batch_is_stored_once(client: httpx.AsyncClient, acme: TenantKey) -> None:
    sid = await store_session(client, acme)
    h = {**acme.headers, "Idempotency-Key": "batch-1"}
    first = await client.post(f"/v1/sessions/{sid}/items", json={"items": ITEMS}, headers=h)
    again = await client.post(f"/v1/sessions/{sid}/items", json={"items": ITEMS}, headers=h)
    assert again.status_code == 201
    assert again.json() == {"ids": first.json()["ids"][:1], "duplicate": True}
    assert (await items_of(client, acme, sid))["data"] == ITEMS


async def test_items_keep_ttl_export_bookmarks_and_live_events(
    client: httpx.AsyncClient, acme: TenantKey, runtime: Runtime, data_redis: Any
) -> None:
    sid = await store_session(client, acme, ttl_seconds=500)
    h = acme.headers
    store = runtime.store.tenant("acme")
    keys = store._session_keys(sid)
    await data_redis.expire(keys.meta, 10)
    r = await client.post(f"/v1/sessions/{sid}/items", json={"items": ITEMS[:2]}, headers=h)
    ids = r.json()["ids"]
    for key in (keys.meta, keys.history):
        assert 490_000 < await data_redis.pttl(key) <= 500_000
    r = await client.put(f"/v1/sessions/{sid}/bookmarks/b1", json={}, headers=h)
    assert r.json()["event_id"] == ids[-1]

    r = await client.get(f"/v1/sessions/{sid}/export", params={"format": "jsonl"}, headers=h)
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [(e["id"], e["type"], e["data"]) for e in lines[1:]] == [
        (ids[0], "item", ITEMS[0]),
        (ids[1], "item", ITEMS[1]),
    ]
    await client.post(f"/v1/sessions/{sid}/items/pop", headers=h)
    await client.delete(f"/v1/sessions/{sid}/items", headers=h)
    live = await store.live_events(sid)
    kinds = [(e["type"], e["data"]) for e in live if e["type"] != "session.start"]
    assert kinds == [
        ("item", ITEMS[0]),
        ("item", ITEMS[1]),
        ("item.popped", {"id": ids[1]}),
        ("items.cleared", {"count": 1}),
    ]
    assert [e["id"] for e in live[1:3]] == ids
    r = await client.get(f"/v1/sessions/{sid}/bookmarks", headers=h)
    assert r.json()["data"] == []  # a clear drops the bookmarks into the history


async def test_concurrent_writers_keep_one_order(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    sid = await store_session(client, acme)
    writers, batches = 32, 5

    async def write(w: int) -> list[str]:
        ids: list[str] = []
        for b in range(batches):
            items = [{"w": w, "b": b, "k": k} for k in range(3)]
            r = await client.post(
                f"/v1/sessions/{sid}/items", json={"items": items}, headers=acme.headers
            )
            assert r.status_code == 201, r.text
            ids += r.json()["ids"]
        return ids

    written = await asyncio.gather(*(write(w) for w in range(writers)))
    page = await items_of(client, acme, sid)
    assert len(page["data"]) == writers * batches * 3  # no lost write
    assert sorted(page["ids"]) == sorted(i for ids in written for i in ids)
    # one order: batches are contiguous, each writer's batches in its own order, ids ascending
    data = page["data"]
    for i in range(0, len(data), 3):
        assert {(d["w"], d["b"]) for d in data[i : i + 3]} == {(data[i]["w"], data[i]["b"])}
        assert [d["k"] for d in data[i : i + 3]] == [0, 1, 2]
    for w in range(writers):
        assert [d["b"] for d in data if d["w"] == w][::3] == list(range(batches))
    order = [tuple(int(p) for p in i.split("-")) for i in page["ids"]]
    assert order == sorted(order)


def test_openapi_documents_items(app: FastAPI) -> None:
    spec = app.openapi()
    paths = spec["paths"]
    post = paths["/v1/sessions/{session_id}/items"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ItemsAppend"
    )
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
    get = paths["/v1/sessions/{session_id}/items"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ItemList"
    )
    assert "/v1/sessions/{session_id}/items/pop" in paths
    assert "delete" in paths["/v1/sessions/{session_id}/items"]
    schemas = spec["components"]["schemas"]
    assert schemas["ItemsAppend"]["properties"]["items"]["maxItems"] == 1000
    assert schemas["SessionCreate"]["properties"]["mode"]


async def test_message_items_are_counted_and_odd_roles_are_not_messages(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    """``GET /messages`` lists a store session's user and assistant items, and the session's
    ``message_count`` (and a bookmark's) counts them, through appends, pops and a clear. An
    item whose role is not a string is an item, not a message, and breaks no read."""
    sid = await store_session(client, acme, "counted")
    odd = [{"role": ["user"], "content": "x"}, {"role": {"a": 1}}, {"role": None}]
    r = await client.post(
        f"/v1/sessions/{sid}/items", json={"items": [*ITEMS, *odd]}, headers=acme.headers
    )
    assert r.status_code == 201, r.text

    async def counts() -> tuple[int, int]:
        info = (await client.get(f"/v1/sessions/{sid}", headers=acme.headers)).json()
        r = await client.get(f"/v1/sessions/{sid}/messages", headers=acme.headers)
        assert r.status_code == 200, r.text
        assert info["message_count"] == len(r.json()["data"])
        return info["event_count"], info["message_count"]

    assert await counts() == (8, 2)
    r = await client.put(f"/v1/sessions/{sid}/bookmarks/b", json={}, headers=acme.headers)
    assert r.json()["message_count"] == 2
    for _ in odd:
        popped = await client.post(f"/v1/sessions/{sid}/items/pop", headers=acme.headers)
    assert await counts() == (5, 2)
    events = (await client.get(f"/v1/sessions/{sid}/events", headers=acme.headers)).json()["data"]

    async def bookmark() -> tuple[str, int]:
        r = await client.get(f"/v1/sessions/{sid}/bookmarks/b", headers=acme.headers)
        return r.json()["event_id"], r.json()["message_count"]

    assert await bookmark() == (events[-1]["id"], 2)  # it marked a popped item: now the one before
    assert popped.json()["id"] != events[-1]["id"]
    await client.post(f"/v1/sessions/{sid}/items/pop", headers=acme.headers)  # the assistant's
    assert await counts() == (4, 1)
    assert await bookmark() == (events[-2]["id"], 1)
    r = await client.get(f"/v1/sessions/{sid}/bookmarks/b/messages", headers=acme.headers)
    assert r.json()["data"] == []
    await client.delete(f"/v1/sessions/{sid}/items", headers=acme.headers)
    assert await counts() == (0, 0)


async def test_bookmark_messages_page_past_other_items_and_say_where_to_go_on(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    """Messages after a bookmark are found past any number of other events, and a page cut by
    ``limit`` names its ``next_cursor`` (to follow on ``GET .../messages``)."""
    sid = await store_session(client, acme, "marked")
    h = acme.headers
    await client.put(f"/v1/sessions/{sid}/bookmarks/bm", json={}, headers=h)
    call = {"type": "function_call", "name": "f", "arguments": "{}"}
    for start in range(0, 1000, 100):
        batch = [{**call, "call_id": f"c{i}"} for i in range(start, start + 100)]
        r = await client.post(f"/v1/sessions/{sid}/items", json={"items": batch}, headers=h)
        assert r.status_code == 201, r.text
    said = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    await client.post(f"/v1/sessions/{sid}/items", json={"items": said}, headers=h)
    r = await client.get(f"/v1/sessions/{sid}/bookmarks/bm/messages", headers=h)
    assert [m["content"] for m in r.json()["data"]] == ["one", "two"]
    assert r.json()["next_cursor"] is None
    r = await client.get(f"/v1/sessions/{sid}/bookmarks/bm/messages?limit=1", headers=h)
    assert [m["content"] for m in r.json()["data"]] == ["one"]
    cursor = r.json()["next_cursor"]
    r = await client.get(f"/v1/sessions/{sid}/messages", params={"after": cursor}, headers=h)
    assert [m["content"] for m in r.json()["data"]] == ["two"]
