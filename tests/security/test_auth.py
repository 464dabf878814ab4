"""Keys over real HTTP: every route refuses a missing or wrong key, guessing is limited per
client address (and a forged X-Forwarded-For does not reset it), keys are stored as digests only,
neither keys nor prompts reach the logs, and live streams end once a key stops working.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from service.api.limits import AUTH_FAILURES_PER_WINDOW
from service.tenants import digest
from tests.security.conftest import (
    ADMIN_KEY,
    PREFIX,
    LiveServer,
    TenantKey,
    assert_problem,
    new_tenant,
    spawn_server,
    stop_server,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_every_route_refuses_a_missing_or_wrong_key(
    live: LiveServer, live_alpha: TenantKey, real_redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.post("/v1/sessions", json={"session_id": "s1"}, headers=live_alpha.headers)
        assert r.status_code == 201
        schema = (await http.get("/openapi.json")).json()
        routes = [
            (method.upper(), path.replace("{session_id}", "s1").replace("{name}", "b")
             .replace("{tenant_id}", "alpha"))
            for path, operations in schema["paths"].items()
            for method in operations
            if path.startswith("/v1/")
        ]  # fmt: skip
        assert len(routes) >= 25
        wrong = [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {live_alpha.key}"},
            {"Authorization": f"Bearer {live_alpha.key}x"},
        ]
        for method, url in routes:
            for headers in wrong:
                r = await http.request(method, url, headers=headers, json={})
                assert_problem(r, 401)
                assert r.headers["WWW-Authenticate"] == "Bearer"
            # Wrong keys count against this address (the next test's subject): reset the count.
            await real_redis.delete(f"{PREFIX}:_tenants:{{admin}}:failures:127.0.0.1")
        for path in ("/livez", "/readyz", "/metrics", "/openapi.json"):
            assert (await http.get(path)).status_code == 200  # the only open routes


async def test_key_guessing_is_limited_per_address_and_not_by_forwarded_headers(
    live: LiveServer, live_alpha: TenantKey, real_redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        for i in range(AUTH_FAILURES_PER_WINDOW):
            guess = {"Authorization": f"Bearer sk_alpha_guess{i}", "X-Forwarded-For": f"10.0.0.{i}"}
            assert (await http.get("/v1/sessions", headers=guess)).status_code == 401
        guess = {"Authorization": "Bearer sk_alpha_guess", "X-Forwarded-For": "10.9.9.9"}
        r = await http.get("/v1/sessions", headers=guess)
        assert_problem(r, 429)
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        r = await http.get(
            "/v1/admin/tenants",
            headers={"Authorization": "Bearer no", "X-Forwarded-For": "192.0.2.1"},
        )
        assert_problem(r, 429)
        # Valid keys are never refused for the failures of their address (it may be shared).
        assert (await http.get("/v1/sessions", headers=live_alpha.headers)).status_code == 200
        assert (await http.get("/v1/admin/tenants", headers=ADMIN)).status_code == 200
        assert (await http.get("/livez")).status_code == 200
    counters = [
        k async for k in real_redis.scan_iter(match=f"{PREFIX}:_tenants:{{admin}}:failures:*")
    ]
    assert counters == [f"{PREFIX}:_tenants:{{admin}}:failures:127.0.0.1"]


async def test_keys_are_stored_as_digests_only(
    live: LiveServer, real_redis: Redis, redis_server_url: str
) -> None:
    """Keys made every way (admin create, rotation, the registry) appear nowhere in Redis: not in
    any key name, value, hash field, stream entry, set member or queued job."""
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.post("/v1/admin/tenants", json={"id": "gamma"}, headers=ADMIN)
        created = r.json()["api_key"]
        r = await http.post("/v1/admin/tenants/gamma/rotate-key", headers=ADMIN)
        rotated = r.json()["api_key"]
        h = {"Authorization": f"Bearer {rotated}"}
        assert (await http.post("/v1/sessions", json={"session_id": "s"}, headers=h)).is_success
        r = await http.post("/v1/sessions/s/messages", json={"prompt": "hello"}, headers=h)
        assert r.status_code == 202
        await http.get("/v1/sessions", headers={"Authorization": f"Bearer {created}"})  # refused
    everything = await dump_all(redis_server_url)
    for key in (created, rotated, ADMIN_KEY):
        secret = key.split("_", 2)[2] if key.startswith("sk_") else key  # sk_<tenant>_<secret>
        for needle in (key.encode(), secret.encode(), secret[:16].encode()):
            assert needle not in everything
    assert digest(rotated).encode() in everything  # what is stored instead
    assert digest(created).encode() not in everything  # and the old one is gone


async def dump_all(url: str) -> bytes:
    """Every key name and every value in the server, by type, as one blob of bytes."""
    redis = Redis.from_url(url, decode_responses=False)
    parts: list[bytes] = []
    try:
        async for key in redis.scan_iter(count=1000):
            parts.append(key)
            kind = (await redis.type(key)).decode()
            value: Any
            if kind == "string":
                value = [await redis.get(key)]
            elif kind == "hash":
                value = [x for kv in (await redis.hgetall(key)).items() for x in kv]
            elif kind == "list":
                value = await redis.lrange(key, 0, -1)
            elif kind == "set":
                value = list(await redis.smembers(key))
            elif kind == "zset":
                value = [m for m, _ in await redis.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                value = [
                    x for _, fields in await redis.xrange(key) for kv in fields.items() for x in kv
                ]
            else:  # pragma: no cover - no other types are used
                raise AssertionError(f"unexpected type {kind} of {key!r}")
            parts += [v for v in value if v is not None]
    finally:
        await redis.aclose()
    return b"\n".join(parts)


async def test_logs_carry_no_prompt_label_or_key(
    live: LiveServer, live_alpha: TenantKey, real_redis: Redis
) -> None:
    """At the default level and format, in every request the service logs, including refused
    ones and malformed bodies."""
    prompt = "PROMPT-7a1c-do-not-log"
    label = "LABEL-93be-do-not-log"
    system = "SYSTEM-55d0-do-not-log"
    offset = live.log_offset()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        h = live_alpha.headers
        r = await http.post(
            "/v1/sessions",
            json={"session_id": "logged", "labels": {"k": label}, "system_message": system},
            headers=h,
        )
        assert r.status_code == 201
        assert (
            await http.post("/v1/sessions/logged/messages", json={"prompt": prompt}, headers=h)
        ).status_code == 202
        await http.post("/v1/sessions/logged/messages", json={"prompt": prompt, "x": 1}, headers=h)
        await http.post(
            "/v1/sessions/logged/messages",
            content=f'{{"prompt": "{prompt}"'.encode(),
            headers={**h, "Content-Type": "application/json"},
        )
        await http.post(
            "/v1/sessions/logged/messages",
            content=f'{{"prompt": "{prompt}"}}'.encode(),
            headers={**h, "Content-Type": "text/plain"},
        )
        await http.post("/v1/sessions/nope/messages", json={"prompt": prompt}, headers=h)
        await http.get("/v1/sessions", params={"label": f"k={label}"}, headers=h)
        await http.get("/v1/sessions", headers={"Authorization": f"Bearer {live_alpha.key}x"})
        await http.get("/v1/sessions", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        await http.get("/v1/admin/tenants", headers=h)
        await http.get("/v1/admin/tenants", headers={"Authorization": f"Bearer {ADMIN_KEY}x"})
        r = await http.post("/v1/admin/tenants/alpha/rotate-key", headers=ADMIN)
        rotated = r.json()["api_key"]
        await http.get("/v1/tenant", headers={"Authorization": f"Bearer {rotated}"})
        await http.get("/livez")
    await asyncio.sleep(0.3)  # the last lines reach the file
    log = live.log_since(offset)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len([x for x in lines if x.get("event") == "request"]) >= 14, log[-2000:]
    # the part after "sk_<tenant>_" (the secret may itself hold "_": token_urlsafe)
    secret = live_alpha.key.split("_", 2)[2]
    assert len(secret) >= 40
    for needle in (prompt, label, system, live_alpha.key, secret[:12], ADMIN_KEY, rotated):
        assert needle not in log, needle
    assert {x["level"] for x in lines} <= {"info", "warning"}


async def read_until_closed(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> float:
    """Open a stream, wait for its first bytes, and return the time it closed at."""
    async with http.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for _ in r.aiter_bytes():
            pass
    return time.monotonic()


@pytest.mark.parametrize("action", ["disable", "rotate"])
async def test_live_streams_end_when_the_key_stops_working(
    live: LiveServer, live_alpha: TenantKey, action: str
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        h = live_alpha.headers
        assert (await http.post("/v1/sessions", json={"session_id": "s"}, headers=h)).is_success
        streams = [
            asyncio.create_task(read_until_closed(http, url, h))
            for url in ("/v1/sessions/s/events/stream", "/v1/lifecycle/stream")
        ]
        await asyncio.sleep(1.0)  # both are open and waiting
        assert not any(s.done() for s in streams)
        if action == "disable":
            r = await http.patch("/v1/admin/tenants/alpha", json={"disabled": True}, headers=ADMIN)
        else:
            r = await http.post("/v1/admin/tenants/alpha/rotate-key", headers=ADMIN)
        assert r.status_code == 200
        changed = time.monotonic()
        async with asyncio.timeout(10):
            closed = await asyncio.gather(*streams)
        # The key is checked again every second, between waits of at most 4 s on Redis.
        assert max(closed) - changed < 8, [c - changed for c in closed]
        r = await http.get("/v1/sessions/s/events/stream", headers=h)
        assert_problem(r, 401)


async def test_behind_a_proxy_failures_count_per_forwarded_client(
    redis_server_url: str, real_redis: Redis, tmp_path: Path
) -> None:
    """``sessionctl serve --proxy-headers`` with the proxy's address in
    SESSIONS_FORWARDED_ALLOW_IPS: the client address is the one the proxy appends to
    X-Forwarded-For, so one client's guesses lock out that client only, and what a client writes
    into the header itself changes nothing. Without the flag every client shares the proxy's
    address, and so its failure counter."""
    tenant = await new_tenant(real_redis, "alpha")
    server = spawn_server(
        redis_server_url,
        tmp_path / "proxied.log",
        "--proxy-headers",
        env={"SESSIONS_FORWARDED_ALLOW_IPS": "127.0.0.1"},
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            attacker = {"X-Forwarded-For": "198.51.100.66"}
            for i in range(AUTH_FAILURES_PER_WINDOW):
                # the proxy appends the real address after whatever the client sent
                headers = {"X-Forwarded-For": f"10.0.0.{i}, 198.51.100.66"}
                r = await http.get(
                    "/v1/sessions",
                    headers={"Authorization": f"Bearer sk_alpha_guess{i}", **headers},
                )
                assert r.status_code == 401
            r = await http.get("/v1/sessions", headers={"Authorization": "Bearer x", **attacker})
            assert_problem(r, 429)
            r = await http.get(
                "/v1/sessions", headers={**tenant.headers, "X-Forwarded-For": "198.51.100.7"}
            )
            assert r.status_code == 200
    finally:
        stop_server(server)
    counters = sorted(
        [k async for k in real_redis.scan_iter(match=f"{PREFIX}:_tenants:{{admin}}:failures:*")]
    )
    assert counters == [f"{PREFIX}:_tenants:{{admin}}:failures:198.51.100.66"]
