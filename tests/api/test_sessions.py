"""Sessions over HTTP: create, list, read, update, delete."""

from __future__ import annotations

import httpx

from service.runtime import Runtime
from service.tenants import Limits
from tests.api.conftest import TenantKey


async def test_create_get_update_delete(client: httpx.AsyncClient, acme: TenantKey) -> None:
    h = acme.headers
    r = await client.post(
        "/v1/sessions",
        json={"session_id": "user-42-main", "model": "gpt-4o", "labels": {"team": "a"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["session_id"] == "user-42-main"
    assert body["model"] == "gpt-4o"
    assert body["labels"] == {"team": "a"}
    assert body["infinite"] is False and body["expires_at"] is not None
    assert "compacted_through" not in body and "modified_ms" not in body
    assert set(body) >= {"created_at", "modified_at", "event_count", "message_count", "status"}

    r = await client.get("/v1/sessions/user-42-main", headers=h)
    assert r.status_code == 200 and r.json()["session_id"] == "user-42-main"

    r = await client.patch(
        "/v1/sessions/user-42-main",
        json={"name": "Plan", "infinite": True, "labels": {"team": "b"}},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Plan"
    assert r.json()["infinite"] is True and r.json()["expires_at"] is None
    assert r.json()["labels"] == {"team": "b"}

    r = await client.delete("/v1/sessions/user-42-main", headers=h)
    assert r.status_code == 204 and r.content == b""
    r = await client.get("/v1/sessions/user-42-main", headers=h)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404 and r.json()["type"] == "/problems/session-not-found"
    r = await client.delete("/v1/sessions/user-42-main", headers=h)
    assert r.status_code == 404


async def test_generated_id_and_defaults(client: httpx.AsyncClient, acme: TenantKey) -> None:
    r = await client.post("/v1/sessions", json={}, headers=acme.headers)
    assert r.status_code == 201, r.text
    assert len(r.json()["session_id"]) == 36
    assert r.json()["model"] == "dev-echo"
    assert r.json()["ttl_seconds"] == 3600


async def test_infinite_and_ttl_on_create(client: httpx.AsyncClient, acme: TenantKey) -> None:
    r = await client.post(
        "/v1/sessions", json={"session_id": "inf", "infinite_sessions": True}, headers=acme.headers
    )
    assert r.json()["infinite"] is True and r.json()["expires_at"] is None
    r = await client.post(
        "/v1/sessions", json={"session_id": "short", "ttl_seconds": 60}, headers=acme.headers
    )
    assert r.json()["ttl_seconds"] == 60


async def test_list_pages_and_label_filter(client: httpx.AsyncClient, acme: TenantKey) -> None:
    h = acme.headers
    for i in range(5):
        labels = {"team": "a" if i % 2 == 0 else "b"}
        r = await client.post(
            "/v1/sessions", json={"session_id": f"s{i}", "labels": labels}, headers=h
        )
        assert r.status_code == 201
    r = await client.get("/v1/sessions", params={"limit": 2}, headers=h)
    assert r.status_code == 200
    page = r.json()
    assert [s["session_id"] for s in page["data"]] == ["s4", "s3"]
    seen = [s["session_id"] for s in page["data"]]
    while page["next_cursor"]:
        r = await client.get(
            "/v1/sessions", params={"limit": 2, "cursor": page["next_cursor"]}, headers=h
        )
        page = r.json()
        seen += [s["session_id"] for s in page["data"]]
    assert seen == ["s4", "s3", "s2", "s1", "s0"]

    r = await client.get("/v1/sessions", params={"label": "team=a"}, headers=h)
    assert [s["session_id"] for s in r.json()["data"]] == ["s4", "s2", "s0"]
    r = await client.get("/v1/sessions", params=[("label", "team=a"), ("label", "x=y")], headers=h)
    assert r.json()["data"] == []


async def test_list_bad_parameters_are_422(client: httpx.AsyncClient, acme: TenantKey) -> None:
    h = acme.headers
    for params in ({"limit": 0}, {"limit": 1001}, {"label": "noequals"}, {"cursor": "%%%"}):
        r = await client.get("/v1/sessions", params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"] == "application/problem+json"


async def test_duplicate_id_is_409(client: httpx.AsyncClient, acme: TenantKey) -> None:
    await client.post("/v1/sessions", json={"session_id": "dup"}, headers=acme.headers)
    r = await client.post("/v1/sessions", json={"session_id": "dup"}, headers=acme.headers)
    assert r.status_code == 409
    assert r.json()["title"] == "Conflict"
    assert r.json()["session_id"] == "dup"


async def test_invalid_bodies_are_422(client: httpx.AsyncClient, acme: TenantKey) -> None:
    h = acme.headers
    cases = [
        {"session_id": "a:b"},
        {"session_id": "x" * 129},
        {"session_id": "{tag}"},
        {"unknown": 1},
        {"ttl_seconds": 0},
        {"labels": {"bad key": "v"}},
        {"streaming": "maybe"},
    ]
    for body in cases:
        r = await client.post("/v1/sessions", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert problem["status"] == 422 and problem["detail"]
    r = await client.post("/v1/sessions", json={"unknown": 1}, headers=h)
    assert r.json()["errors"][0]["loc"] == ["body", "unknown"]
    await client.post("/v1/sessions", json={"session_id": "p"}, headers=h)
    r = await client.patch("/v1/sessions/p", json={"model": "other"}, headers=h)
    assert r.status_code == 422


async def test_max_sessions_of_tenant_is_429(
    client: httpx.AsyncClient, runtime, acme: TenantKey
) -> None:
    tenant = await runtime.tenants.get("acme")
    tenant.limits.max_sessions = 2
    await runtime.tenants.save(tenant)
    for i in range(2):
        r = await client.post("/v1/sessions", json={"session_id": f"q{i}"}, headers=acme.headers)
        assert r.status_code == 201
    r = await client.post("/v1/sessions", json={"session_id": "q2"}, headers=acme.headers)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1


async def test_tenant_default_model_applies_to_sessions_created_without_one(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/admin/tenants",
        json={"id": "modeled", "default_model": "gpt-4o"},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["tenant"]["default_model"] == "gpt-4o"
    headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
    r = await client.post("/v1/sessions", json={"session_id": "a"}, headers=headers)
    assert r.json()["model"] == "gpt-4o"
    r = await client.post("/v1/sessions", json={"session_id": "b", "model": "x"}, headers=headers)
    assert r.json()["model"] == "x"
    r = await client.patch(
        "/v1/admin/tenants/modeled", json={"default_model": "llama3"}, headers=admin_headers
    )
    assert r.json()["default_model"] == "llama3"
    r = await client.post("/v1/sessions", json={"session_id": "c"}, headers=headers)
    assert r.json()["model"] == "llama3"


async def test_system_message_obeys_the_tenant_byte_limit(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A tenant's ``max_message_bytes`` bounds its system messages as it bounds its prompts."""
    _, key = await runtime.tenants.create("small", limits=Limits(max_message_bytes=1000))
    h = {"Authorization": f"Bearer {key}"}
    r = await client.post(
        "/v1/sessions", json={"session_id": "big", "system_message": "é" * 501}, headers=h
    )
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert "1000" in r.json()["detail"]
    assert (await client.get("/v1/sessions/big", headers=h)).status_code == 404
    r = await client.post(
        "/v1/sessions", json={"session_id": "fits", "system_message": "é" * 500}, headers=h
    )
    assert r.status_code == 201


async def test_list_items_leave_out_the_system_message(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    body = {"session_id": "s", "system_message": "You are terse."}
    assert (await client.post("/v1/sessions", json=body, headers=acme.headers)).status_code == 201
    (item,) = (await client.get("/v1/sessions", headers=acme.headers)).json()["data"]
    assert item["session_id"] == "s" and "system_message" not in item
    one = (await client.get("/v1/sessions/s", headers=acme.headers)).json()
    assert one["system_message"] == "You are terse."
    assert {k: v for k, v in one.items() if k != "system_message"} == item
