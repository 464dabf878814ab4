"""Tenant isolation: another tenant's ids, and crafted ids, reach nothing and change nothing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import PREFIX, TenantKey, snapshot

CRAFTED = ["*", "{x}", "a:b", "%2F..%2F", "s" * 200, "ünïcode", "acme/s1", "s1 ", "..", "-dash"]


def session_calls(sid: str) -> list[tuple[str, str, Any]]:
    base = f"/v1/sessions/{sid}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"name": "pwned", "infinite": True}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"prompt": "hi"}),
        ("GET", f"{base}/messages", None),
        ("POST", f"{base}/abort", None),
        ("GET", f"{base}/events", None),
        ("GET", f"{base}/events/stream", None),
        ("PUT", f"{base}/bookmarks/mark", {"description": "x"}),
        ("PUT", f"{base}/bookmarks/new", {}),
        ("GET", f"{base}/bookmarks", None),
        ("GET", f"{base}/bookmarks/mark", None),
        ("GET", f"{base}/bookmarks/mark/messages", None),
        ("GET", f"{base}/bookmarks/mark/events", None),
        ("DELETE", f"{base}/bookmarks/mark", None),
        ("GET", f"{base}/export", None),
        ("GET", f"{base}/export?format=jsonl", None),
    ]


async def populate(client: httpx.AsyncClient, acme: TenantKey) -> None:
    h = acme.headers
    for sid in ("s1", "a-2"):
        assert (await client.post("/v1/sessions", json={"session_id": sid}, headers=h)).is_success
        await client.post(f"/v1/sessions/{sid}/messages", json={"prompt": "secret"}, headers=h)
        await client.put(f"/v1/sessions/{sid}/bookmarks/mark", json={}, headers=h)


async def test_other_tenant_gets_404_and_changes_nothing(
    client: httpx.AsyncClient, acme: TenantKey, globex: TenantKey, data_redis: Any
) -> None:
    await populate(client, acme)
    before = await snapshot(data_redis)
    for sid in ("s1", "a-2"):
        for method, url, body in session_calls(sid):
            r = await client.request(method, url, json=body, headers=globex.headers)
            assert r.status_code == 404, (method, url, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
            assert "secret" not in r.text
    r = await client.get("/v1/sessions", headers=globex.headers)
    assert r.json() == {"data": [], "next_cursor": None}
    r = await client.get("/v1/lifecycle", headers=globex.headers)
    assert r.json() == {"data": []}
    assert await snapshot(data_redis) == before


async def test_crafted_ids_are_refused_and_change_nothing(
    client: httpx.AsyncClient, acme: TenantKey, globex: TenantKey, data_redis: Any
) -> None:
    await populate(client, acme)
    before = await snapshot(data_redis)
    for who in (globex, acme):
        for sid in CRAFTED:
            for method, url, body in session_calls(sid):
                r = await client.request(method, url, json=body, headers=who.headers)
                assert r.status_code in {404, 422}, (who.id, method, url, r.status_code, r.text)
                assert r.headers["content-type"] == "application/problem+json"
            r = await client.post("/v1/sessions", json={"session_id": sid}, headers=who.headers)
            assert r.status_code == 422, sid
        for name in CRAFTED:
            r = await client.put(f"/v1/sessions/s1/bookmarks/{name}", json={}, headers=who.headers)
            # ".." is resolved by the client to /v1/sessions/s1, where PUT is 405
            assert r.status_code in {404, 405, 422}, (name, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
    assert await snapshot(data_redis) == before


async def test_same_session_id_in_two_tenants_is_two_sessions(
    client: httpx.AsyncClient, acme: TenantKey, globex: TenantKey, data_redis: Any
) -> None:
    await populate(client, acme)
    acme_keys = f"{PREFIX}:acme:".encode()
    before = {k: v for k, v in (await snapshot(data_redis)).items() if k.startswith(acme_keys)}
    r = await client.post("/v1/sessions", json={"session_id": "s1"}, headers=globex.headers)
    assert r.status_code == 201
    await client.post("/v1/sessions/s1/messages", json={"prompt": "other"}, headers=globex.headers)
    await client.delete("/v1/sessions/s1", headers=globex.headers)
    after = {k: v for k, v in (await snapshot(data_redis)).items() if k.startswith(acme_keys)}
    assert after == before
    r = await client.get("/v1/sessions/s1/messages", headers=acme.headers)
    assert [m["content"] for m in r.json()["data"]] == ["secret"]
