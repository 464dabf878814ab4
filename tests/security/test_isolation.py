"""Tenant isolation over real HTTP: tenant B's key, on every route and with crafted ids sent as
raw bytes (no client normalizes them first), never reads, lists, changes or deletes tenant A's
data, and crafted ids never become Redis keys, whoever sends them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from redis.asyncio import Redis

from service.paging import encode_cursor
from tests.security.conftest import (
    ADMIN_KEY,
    PREFIX,
    LiveServer,
    RawReply,
    TenantKey,
    raw_exchange,
    snapshot,
)

SECRET = "alpha-private-prompt-7f3a"

# Path segments sent verbatim: globs, hash tags, separators, traversal (plain, encoded, double
# encoded), NUL, CR LF, whitespace, unicode, and lengths past every limit.
CRAFTED = [
    "*", "%2A", "s%3F", "%5Ba-z%5D%2A", "[s]1", "s1%5B", "{alpha/s1}", "%7Balpha%2Fs1%7D",
    "%7Balpha%7D", "alpha%2Fs1", "alpha:s1", "s1%3Ameta", "s1:events", "..", "%2E%2E",
    "%2e%2e%2f%2e%2e", "..%2F..%2Fbeta", "%2E%2E%2F%2E%2E%2Fbeta%2Fs1", "%252F", "%25", "s1%00",
    "%00", "s1%0D%0AX-Injected:%201", "s1%20", "%20s1", "%09", "s" * 129, "s" * 10_000,
    "%C3%BCnicode", "%F0%9F%98%80", "%E2%80%AEs1", "s1;x", "%5Cs1", "~s1", "-s1", ".s1", "_s1",
    "sess:alpha:%7Balpha%2Fs1%7D:meta", "%FF%FE",
]  # fmt: skip


def session_routes(sid: str, name: str = "mark") -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/v1/sessions/{sid}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"name": "taken", "infinite": True, "labels": {"owner": "beta"}}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"prompt": "injected"}),
        ("GET", f"{base}/messages", None),
        ("POST", f"{base}/abort", None),
        ("GET", f"{base}/events", None),
        ("GET", f"{base}/events/stream", None),
        ("PUT", f"{base}/bookmarks/{name}", {"description": "x"}),
        ("GET", f"{base}/bookmarks", None),
        ("GET", f"{base}/bookmarks/{name}", None),
        ("GET", f"{base}/bookmarks/{name}/messages", None),
        ("GET", f"{base}/bookmarks/{name}/events", None),
        ("DELETE", f"{base}/bookmarks/{name}", None),
        ("GET", f"{base}/export", None),
        ("GET", f"{base}/export?format=jsonl", None),
    ]


def raw_request(method: str, target: str, key: str, body: dict[str, Any] | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Authorization: Bearer {key}\r\n"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return (head + "\r\n").encode() + payload


async def send(live: LiveServer, method: str, target: str, key: str, body: Any) -> RawReply:
    return await raw_exchange(live, raw_request(method, target, key, body), read_for=10)


async def populate(http: httpx.AsyncClient, alpha: TenantKey) -> None:
    h = alpha.headers
    for sid in ("s1", "a-2", "x.y_z"):
        r = await http.post(
            "/v1/sessions", json={"session_id": sid, "labels": {"t": "a"}}, headers=h
        )
        assert r.status_code == 201, r.text
        r = await http.post(
            f"/v1/sessions/{sid}/messages",
            json={"prompt": SECRET},
            headers={**h, "Idempotency-Key": "same-key"},
        )
        assert r.status_code == 202, r.text
        r = await http.put(f"/v1/sessions/{sid}/bookmarks/mark", json={}, headers=h)
        assert r.status_code == 200, r.text


def refused(reply: RawReply, allowed: set[int]) -> None:
    assert reply.status in allowed, (reply.status, reply.data[:300])
    assert reply.header("content-type") == "application/problem+json", reply.data[:300]
    problem = json.loads(reply.body)
    assert problem["status"] == reply.status and problem["title"] and problem["detail"]
    assert SECRET.encode() not in reply.data
    assert reply.header("x-injected") is None


async def test_other_tenant_reaches_nothing_on_any_route(
    live: LiveServer, live_alpha: TenantKey, live_beta: TenantKey, real_redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        await populate(http, live_alpha)
        before = await snapshot(real_redis)
        for sid in ("s1", "a-2", "x.y_z"):
            for method, url, body in session_routes(sid):
                refused(await send(live, method, url, live_beta.key, body), {404})
        # Lists, filters, cursors and lifecycle positions taken from alpha show beta only its own.
        cursor = (await http.get("/v1/sessions?limit=1", headers=live_alpha.headers)).json()
        lifecycle = (await http.get("/v1/lifecycle", headers=live_alpha.headers)).json()["data"]
        for params in (
            {},
            {"label": "t=a"},
            {"cursor": cursor["next_cursor"]},
            {"cursor": encode_cursor("+inf", "")},
            {"cursor": encode_cursor("+inf", "zzz"), "label": "t=a"},
        ):
            r = await http.get("/v1/sessions", params=params, headers=live_beta.headers)
            assert r.json() == {"data": [], "next_cursor": None}, (params, r.text)
        for after in ("0-0", lifecycle[0]["id"]):
            r = await http.get("/v1/lifecycle", params={"after": after}, headers=live_beta.headers)
            assert r.json() == {"data": []}
        r = await http.get("/v1/tenant", headers=live_beta.headers)
        assert r.json()["id"] == "beta"
        # The same session id and idempotency key in beta are beta's own, and new.
        r = await http.post("/v1/sessions", json={"session_id": "s1"}, headers=live_beta.headers)
        assert r.status_code == 201
        r = await http.post(
            "/v1/sessions/s1/messages",
            json={"prompt": "beta's"},
            headers={**live_beta.headers, "Idempotency-Key": "same-key"},
        )
        assert r.json()["duplicate"] is False
        r = await http.get("/v1/sessions/s1/messages", headers=live_beta.headers)
        assert [m["content"] for m in r.json()["data"]] == ["beta's"]
        r = await http.get("/v1/sessions/s1/messages", headers=live_alpha.headers)
        assert [m["content"] for m in r.json()["data"]] == [SECRET]
    after = await snapshot(real_redis)
    alpha_keys = f"{PREFIX}:alpha:".encode()
    assert {k: v for k, v in after.items() if k.startswith(alpha_keys)} == {
        k: v for k, v in before.items() if k.startswith(alpha_keys)
    }


async def test_crafted_ids_are_refused_and_never_become_keys(
    live: LiveServer, live_alpha: TenantKey, live_beta: TenantKey, real_redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        await populate(http, live_alpha)
    before = await snapshot(real_redis)
    for who in (live_beta, live_alpha):  # the owner of s1 included
        for crafted in CRAFTED:
            routes = session_routes(crafted) + [
                route
                for route in session_routes("s1", name=crafted)
                if f"/bookmarks/{crafted}" in route[1]
            ]
            for method, url, body in routes:
                # 422 for the id; 404 or 405 where a decoded "/" made it another route
                refused(await send(live, method, url, who.key, body), {404, 405, 422})
    assert await snapshot(real_redis) == before
    assert_key_layout(await real_redis.keys("*"))


# Every key there may be: tenant data under validated ids, the registry, the key failure
# counters and the turn queue (arq's own keys).
LAYOUT = re.compile(
    rf"{PREFIX}:(?P<t>[a-z0-9][a-z0-9-]{{0,39}}):\{{(?P=t)(/[A-Za-z0-9][A-Za-z0-9._-]{{0,127}})?\}}"
    r":(meta|history|events|bookmarks|idem|turns|lifecycle|quota|pending)"
    rf"|{PREFIX}:(?P<u>[a-z0-9][a-z0-9-]{{0,39}}):\{{(?P=u)/i[0-9]+\}}:(idx|exp)"
    rf"|{PREFIX}:(?P<v>[a-z0-9][a-z0-9-]{{0,39}}):\{{(?P=v)/l[0-9]+\}}:live"
    rf"|{PREFIX}:_tenants:\{{admin\}}:records"
    rf"|{PREFIX}:_tenants:\{{admin\}}:failures:([0-9A-Fa-f.:]+|unknown)"
    rf"|{PREFIX}:_queue(:wake)?|arq:.*"
)


def assert_key_layout(keys: list[str]) -> None:
    assert keys
    strange = [k for k in keys if not LAYOUT.fullmatch(k)]
    assert not strange, strange


async def test_tenant_part_of_a_key_cannot_be_forged(
    live: LiveServer, live_alpha: TenantKey, live_beta: TenantKey, real_redis: Redis
) -> None:
    """The tenant comes from the key, and the whole key must match that tenant's digest: a
    valid secret under another tenant's name, or a crafted tenant part, is refused."""
    alpha_secret = live_alpha.key.removeprefix("sk_alpha_")
    beta_secret = live_beta.key.removeprefix("sk_beta_")
    forged = [
        f"sk_alpha_{beta_secret}",
        f"sk_beta_{alpha_secret}",
        f"sk_ALPHA_{alpha_secret}",
        f"sk_alpha*_{alpha_secret}",
        f"sk_{{alpha}}_{alpha_secret}",
        f"sk_alpha:x_{alpha_secret}",
        f"sk_../alpha_{alpha_secret}",
        f"sk__tenants_{alpha_secret}",
        f"sk_alpha_{alpha_secret[:-1]}",
        f"SK_alpha_{alpha_secret}",
        alpha_secret,
        f"sk_alpha_{alpha_secret}\x00",
    ]
    before = await snapshot(real_redis)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        for key in forged:
            try:
                r = await http.get("/v1/tenant", headers={"Authorization": f"Bearer {key}"})
            except httpx.LocalProtocolError:
                continue  # not even sendable as a header
            assert r.status_code == 401, (key, r.text)
            assert alpha_secret not in r.text and beta_secret not in r.text
        r = await http.get("/v1/tenant", headers=live_alpha.headers)
        assert r.status_code == 200 and r.json()["id"] == "alpha"
    after = await snapshot(real_redis)
    # Only the failure counter of this client's address changed.
    assert {k for k in after if after[k] != before.get(k)} == {
        f"{PREFIX}:_tenants:{{admin}}:failures:127.0.0.1".encode()
    }


async def test_tenant_keys_cannot_administer_other_tenants(
    live: LiveServer, live_alpha: TenantKey, live_beta: TenantKey, real_redis: Redis
) -> None:
    before = await snapshot(real_redis)
    routes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/admin/tenants", None),
        ("POST", "/v1/admin/tenants", {"id": "mallory"}),
        ("GET", "/v1/admin/tenants/alpha", None),
        ("PATCH", "/v1/admin/tenants/alpha", {"disabled": True}),
        ("PATCH", "/v1/admin/tenants/alpha", {"limits": {"rate_limit_per_second": 0.01}}),
        ("POST", "/v1/admin/tenants/alpha/rotate-key", None),
        ("POST", "/v1/admin/tenants/beta/rotate-key", None),
    ]
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        for who in (live_beta, live_alpha):
            for method, url, body in routes:
                r = await http.request(method, url, json=body, headers=who.headers)
                assert r.status_code == 403, (who.id, method, url, r.text)
                assert r.headers["content-type"] == "application/problem+json"
        assert await snapshot(real_redis) == before
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = await http.get("/v1/admin/tenants", headers=admin)
        assert r.status_code == 200
        assert [t["id"] for t in r.json()["data"]] == ["alpha", "beta"]
        assert "key_digest" not in r.text
        for who in (live_alpha, live_beta):
            assert (await http.get("/v1/tenant", headers=who.headers)).status_code == 200
