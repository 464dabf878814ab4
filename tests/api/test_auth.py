"""Keys, admin routes, rate limits and key-guessing limits."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from service.api.limits import AUTH_FAILURES_PER_WINDOW
from service.api.main import create_app
from service.config import Settings
from service.runtime import Runtime
from tests.api.conftest import TenantKey, make_settings
from workers.queue import TurnQueue


async def test_missing_and_invalid_keys_are_401(client: httpx.AsyncClient, acme: TenantKey) -> None:
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer sk_acme_wrongsecret"},
        {"Authorization": "Bearer sk_nobody_secret"},
        {"Authorization": f"Bearer {acme.key}x"},
    ]
    for headers in cases:
        r = await client.get("/v1/sessions", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert acme.key not in r.text


async def test_disabled_tenant_and_rotated_key(
    client: httpx.AsyncClient, acme: TenantKey, admin_headers: dict[str, str]
) -> None:
    assert (await client.get("/v1/tenant", headers=acme.headers)).status_code == 200
    r = await client.patch("/v1/admin/tenants/acme", json={"disabled": True}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await client.get("/v1/tenant", headers=acme.headers)).status_code == 401
    r = await client.patch(
        "/v1/admin/tenants/acme", json={"disabled": False}, headers=admin_headers
    )
    assert (await client.get("/v1/tenant", headers=acme.headers)).status_code == 200

    r = await client.post("/v1/admin/tenants/acme/rotate-key", headers=admin_headers)
    assert r.status_code == 200
    new_key = r.json()["api_key"]
    assert new_key.startswith("sk_acme_") and r.json()["tenant"]["key_hint"] == new_key[-4:]
    assert (await client.get("/v1/tenant", headers=acme.headers)).status_code == 401
    r = await client.get("/v1/tenant", headers={"Authorization": f"Bearer {new_key}"})
    assert r.status_code == 200


async def test_tenant_self(client: httpx.AsyncClient, acme: TenantKey) -> None:
    r = await client.get("/v1/tenant", headers=acme.headers)
    body = r.json()
    assert body["id"] == "acme" and body["name"] == "Acme"
    assert set(body["limits"]) == {"max_sessions", "max_message_bytes", "rate_limit_per_second"}
    assert "key_digest" not in r.text


async def test_admin_crud(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    r = await client.post(
        "/v1/admin/tenants",
        json={"id": "initech", "name": "Initech", "limits": {"max_sessions": 5}},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    assert r.json()["tenant"]["limits"]["max_sessions"] == 5
    assert "key_digest" not in r.text
    r = await client.get("/v1/tenant", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["id"] == "initech"

    r = await client.post("/v1/admin/tenants", json={"id": "initech"}, headers=admin_headers)
    assert r.status_code == 409
    for body in (
        {"id": "Bad_Id"},
        {"id": "ok", "limits": {"max_sessions": 0}},
        {"id": "ok", "x": 1},
    ):
        r = await client.post("/v1/admin/tenants", json=body, headers=admin_headers)
        assert r.status_code == 422, body
    r = await client.post(
        "/v1/admin/tenants", json={"id": "ok", "limits": {"nope": 1}}, headers=admin_headers
    )
    assert r.status_code == 422

    r = await client.get("/v1/admin/tenants", headers=admin_headers)
    assert [t["id"] for t in r.json()["data"]] == ["initech"]
    r = await client.get("/v1/admin/tenants/initech", headers=admin_headers)
    assert r.json()["name"] == "Initech"
    r = await client.patch(
        "/v1/admin/tenants/initech",
        json={"name": "Initech Inc", "limits": {"rate_limit_per_second": 3}},
        headers=admin_headers,
    )
    assert r.json()["name"] == "Initech Inc"
    assert r.json()["limits"] == {
        "max_sessions": 5,
        "max_message_bytes": None,
        "rate_limit_per_second": 3,
    }
    r = await client.get("/v1/admin/tenants/nobody", headers=admin_headers)
    assert r.status_code == 404 and r.json()["type"] == "/problems/tenant-not-found"
    r = await client.post("/v1/admin/tenants/nobody/rotate-key", headers=admin_headers)
    assert r.status_code == 404


async def test_admin_routes_refuse_tenant_keys_and_no_key(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    routes = [
        ("GET", "/v1/admin/tenants", None),
        ("POST", "/v1/admin/tenants", {"id": "x"}),
        ("GET", "/v1/admin/tenants/acme", None),
        ("PATCH", "/v1/admin/tenants/acme", {"disabled": True}),
        ("POST", "/v1/admin/tenants/acme/rotate-key", None),
    ]
    for method, url, body in routes:
        r = await client.request(method, url, json=body, headers=acme.headers)
        assert r.status_code == 403, (method, url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        r = await client.request(method, url, json=body)
        assert r.status_code == 401, (method, url)
        r = await client.request(
            method, url, json=body, headers={"Authorization": "Bearer wrong-admin-key"}
        )
        assert r.status_code == 401, (method, url)
    assert (await client.get("/v1/tenant", headers=acme.headers)).json()["disabled"] is False


async def test_admin_not_configured_is_403(
    redis_server_url: str, real_redis: Redis, runtime: Runtime, queue: TurnQueue
) -> None:
    settings = make_settings(redis_server_url, admin_key=None)
    app = create_app(settings, runtime=runtime, queue=queue)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        r = await client.get("/v1/admin/tenants", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403
    assert "not configured" in r.json()["detail"]


async def test_tenant_rate_limit_is_429_with_retry_after(
    client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey, globex: TenantKey
) -> None:
    tenant = await runtime.tenants.get("acme")
    tenant.limits.rate_limit_per_second = 5
    await runtime.tenants.save(tenant)
    codes = [(await client.get("/v1/sessions", headers=acme.headers)).status_code for _ in range(8)]
    assert codes.count(200) == 5 and codes[5:] == [429, 429, 429]
    r = await client.get("/v1/sessions", headers=acme.headers)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) == 1
    metrics = (await client.get("/metrics")).text
    assert 'sessions_rate_limited_total{limit="requests"} 4.0' in metrics
    # Another tenant (no limit of its own, the default is off here) is not affected.
    assert (await client.get("/v1/sessions", headers=globex.headers)).status_code == 200


async def test_settings_default_rate_applies(
    redis_server_url: str, real_redis: Redis, runtime: Runtime, queue: TurnQueue, acme: TenantKey
) -> None:
    settings = make_settings(redis_server_url, rate_limit_per_second=0.5)
    app = create_app(settings, runtime=runtime, queue=queue)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        first = await client.get("/v1/sessions", headers=acme.headers)
        second = await client.get("/v1/sessions", headers=acme.headers)
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["Retry-After"]) == 2


async def test_key_guessing_is_limited_per_address(
    client: httpx.AsyncClient, acme: TenantKey, admin_headers: dict[str, str]
) -> None:
    bad = {"Authorization": "Bearer sk_acme_guess"}
    for _ in range(AUTH_FAILURES_PER_WINDOW):
        assert (await client.get("/v1/sessions", headers=bad)).status_code == 401
    r = await client.get("/v1/sessions", headers=bad)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    r = await client.get("/v1/admin/tenants", headers={"Authorization": "Bearer wrong-admin"})
    assert r.status_code == 429
    assert (
        await client.get("/v1/sessions", headers={"Authorization": "Bearer x"})
    ).status_code == 429
    metrics = (await client.get("/metrics")).text
    assert 'sessions_rate_limited_total{limit="auth_failures"} 3.0' in metrics
    # Another address is not affected.
    other = httpx.ASGITransport(app=client._transport.app, client=("10.1.2.3", 4000))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=other, base_url="http://test") as c2:
        assert (await c2.get("/v1/sessions", headers=bad)).status_code == 401


async def test_failures_of_a_shared_address_never_refuse_a_valid_key(
    client: httpx.AsyncClient, runtime: Runtime, acme: TenantKey, admin_headers: dict[str, str]
) -> None:
    """Behind one load balancer every client has its address: one client's wrong keys must not
    lock the others (or the admin) out. Valid keys pass; only invalid ones are throttled."""
    _, other_key = await runtime.tenants.create("globex")
    other = {"Authorization": f"Bearer {other_key}"}
    for i in range(AUTH_FAILURES_PER_WINDOW * 2):
        r = await client.get("/v1/sessions", headers={"Authorization": f"Bearer sk_acme_g{i}"})
        assert r.status_code == (401 if i < AUTH_FAILURES_PER_WINDOW else 429)
    for headers in (acme.headers, other, acme.headers):
        assert (await client.get("/v1/sessions", headers=headers)).status_code == 200
    assert (await client.get("/v1/admin/tenants", headers=admin_headers)).status_code == 200
    # A tenant key on an admin route is still 403, not a lockout.
    assert (await client.get("/v1/admin/tenants", headers=acme.headers)).status_code == 403
    assert (
        await client.get("/v1/sessions", headers={"Authorization": "Bearer x"})
    ).status_code == 429


async def test_metrics_count_auth_failures(client: httpx.AsyncClient, app: FastAPI) -> None:
    await client.get("/v1/sessions")
    text = (await client.get("/metrics")).text
    assert "sessions_auth_failures_total 1.0" in text
    assert 'sessions_errors_total{type="Unauthorized"} 1.0' in text


def test_settings_fixture_is_isolated(settings: Settings) -> None:
    assert settings.rate_limit_per_second == 0


async def test_tenant_context_windows(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/admin/tenants",
        json={"id": "windows", "context_windows": {"gpt-4o": 128000, "llama3": 8192}},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["tenant"]["context_windows"] == {"gpt-4o": 128000, "llama3": 8192}
    r = await client.patch(
        "/v1/admin/tenants/windows",
        json={"context_windows": {"llama3": None, "qwen": 32768}},
        headers=admin_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["context_windows"] == {"gpt-4o": 128000, "qwen": 32768}
    for bad in ({"gpt-4o": 10}, {"": 8192}, {"gpt-4o": "big"}, {"x" * 201: 8192}):
        r = await client.patch(
            "/v1/admin/tenants/windows", json={"context_windows": bad}, headers=admin_headers
        )
        assert r.status_code == 422, bad
        assert r.headers["content-type"] == "application/problem+json"
    many = {f"m{i}": 1000 for i in range(99)}
    r = await client.patch(
        "/v1/admin/tenants/windows", json={"context_windows": many}, headers=admin_headers
    )
    assert r.status_code == 422  # 101 entries
    r = await client.get("/v1/admin/tenants/windows", headers=admin_headers)
    assert r.json()["context_windows"] == {"gpt-4o": 128000, "qwen": 32768}  # unchanged
