"""Per-tenant limits over real HTTP: request rate (429 with Retry-After, per tenant), prompt
size (413), sessions per tenant (429); one tenant at its limits leaves the others unaffected.
"""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from service.tenants import TenantRegistry
from tests.security.conftest import PREFIX, LiveServer, TenantKey, assert_problem


async def set_limits(redis: Redis, tenant_id: str, **limits: object) -> None:
    registry = TenantRegistry(redis, PREFIX)
    tenant = await registry.get(tenant_id)
    tenant.limits = tenant.limits.model_copy(update=limits)
    await registry.save(tenant)


async def test_request_rate_is_limited_per_tenant(
    live: LiveServer, live_alpha: TenantKey, live_beta: TenantKey, real_redis: Redis
) -> None:
    await set_limits(real_redis, "alpha", rate_limit_per_second=5)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        burst = await asyncio.gather(
            *[http.get("/v1/sessions", headers=live_alpha.headers) for _ in range(30)]
        )
        codes = [r.status_code for r in burst]
        assert set(codes) == {200, 429}
        assert codes.count(200) <= 10  # 5 a window; a burst may straddle two windows
        for r in burst:
            if r.status_code == 429:
                assert_problem(r, 429)
                assert int(r.headers["Retry-After"]) == 1
                assert r.json()["limit"] == "requests"
        others = await asyncio.gather(
            *[http.get("/v1/sessions", headers=live_beta.headers) for _ in range(30)]
        )
        assert {r.status_code for r in others} == {200}
        await asyncio.sleep(1.1)
        assert (await http.get("/v1/sessions", headers=live_alpha.headers)).status_code == 200


async def test_prompt_size_and_session_count(
    live: LiveServer, live_alpha: TenantKey, live_beta: TenantKey, real_redis: Redis
) -> None:
    await set_limits(real_redis, "alpha", max_message_bytes=1000, max_sessions=2)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        h = live_alpha.headers
        for sid in ("a", "b"):
            assert (await http.post("/v1/sessions", json={"session_id": sid}, headers=h)).is_success
        r = await http.post("/v1/sessions", json={"session_id": "c"}, headers=h)
        assert_problem(r, 429)
        assert int(r.headers["Retry-After"]) >= 1
        ok = await http.post("/v1/sessions/a/messages", json={"prompt": "€" * 333}, headers=h)
        assert ok.status_code == 202  # 999 bytes
        r = await http.post("/v1/sessions/a/messages", json={"prompt": "€" * 334}, headers=h)
        assert_problem(r, 413)
        assert r.json()["limit"] == 1000
        # The deployment's own limits still hold for a tenant without limits of its own.
        hb = live_beta.headers
        for sid in ("a", "b", "c"):
            assert (
                await http.post("/v1/sessions", json={"session_id": sid}, headers=hb)
            ).is_success
        r = await http.post("/v1/sessions/a/messages", json={"prompt": "€" * 334}, headers=hb)
        assert r.status_code == 202
        r = await http.post("/v1/sessions/a/messages", json={"prompt": "x" * 16_385}, headers=hb)
        assert_problem(r, 413)
