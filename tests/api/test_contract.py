"""What the OpenAPI document promises, checked directly: strict body types, the rules written
into parameter schemas, and 405 answers that list every method of the path."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.api.conftest import TenantKey, snapshot


@pytest.mark.parametrize(
    "body",
    [
        {"infinite": 0},
        {"infinite": "true"},
        {"ttl_seconds": "60"},
        {"ttl_seconds": True},
        {"ttl_seconds": 60.5},
        {"name": 5},
        {"labels": {"k": 1}},
    ],
)
async def test_body_fields_take_their_json_type_only(
    client: httpx.AsyncClient, acme: TenantKey, data_redis: Any, body: dict[str, Any]
) -> None:
    h = acme.headers
    assert (
        await client.post("/v1/sessions", json={"session_id": "s1"}, headers=h)
    ).status_code == 201
    before = await snapshot(data_redis)
    r = await client.patch("/v1/sessions/s1", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await snapshot(data_redis) == before


async def test_an_integral_number_is_an_integer(client: httpx.AsyncClient, acme: TenantKey) -> None:
    r = await client.post(
        "/v1/sessions", json={"session_id": "s1", "ttl_seconds": 60.0}, headers=acme.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["ttl_seconds"] == 60


async def test_405_lists_every_method_of_the_path(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    for method, path, allow in (
        ("PUT", "/v1/sessions", "GET, POST"),
        ("OPTIONS", "/v1/sessions/s1", "DELETE, GET, PATCH"),
        ("POST", "/v1/sessions/s1/bookmarks/b", "DELETE, GET, PUT"),
        ("DELETE", "/v1/sessions/s1/messages", "GET, POST"),
    ):
        r = await client.request(method, path, headers=acme.headers)
        assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.headers)


async def test_parameter_rules_are_in_the_document(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemas: dict[str, dict[str, Any]] = {}
    for operations in doc["paths"].values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                schemas.setdefault(param["name"], param["schema"])
                assert "anyOf" not in param["schema"], param  # never "null"
    for name in ("session_id", "name", "tenant_id", "after", "before", "Last-Event-ID", "cursor"):
        assert "pattern" in schemas[name], name
    assert re.fullmatch(schemas["session_id"]["pattern"], "user-42.main_x")
    assert not re.fullmatch(schemas["session_id"]["pattern"], "a:b")
    assert re.fullmatch(schemas["after"]["pattern"], "18446744073709551614-0")
    assert not re.fullmatch(schemas["after"]["pattern"], "18446744073709551615-0")
    create = doc["components"]["schemas"]["SessionCreate"]["properties"]
    assert create["labels"]["propertyNames"]["pattern"] and create["labels"]["maxProperties"] == 32
    assert create["session_id"]["pattern"] == schemas["session_id"]["pattern"]


async def test_cursors_match_their_documented_form(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    h = acme.headers
    for sid in ("a", "b", "c"):
        assert (
            await client.post("/v1/sessions", json={"session_id": sid}, headers=h)
        ).status_code == 201
    doc = (await client.get("/openapi.json")).json()
    pattern = next(
        p["schema"]["pattern"]
        for p in doc["paths"]["/v1/sessions"]["get"]["parameters"]
        if p["name"] == "cursor"
    )
    page = (await client.get("/v1/sessions", params={"limit": 2}, headers=h)).json()
    assert re.fullmatch(pattern, page["next_cursor"])
    rest = (
        await client.get("/v1/sessions", params={"cursor": page["next_cursor"]}, headers=h)
    ).json()
    assert [s["session_id"] for s in rest["data"]] == ["a"]
    # Any value of that form is a position: before everything, or after a session that never was.
    for cursor in ("+inf~", "1e999~zzz", "0~"):
        r = await client.get("/v1/sessions", params={"cursor": cursor}, headers=h)
        assert r.status_code == 200, (cursor, r.text)
    for cursor in ("", "x", "nan~a", "1~a:b"):
        r = await client.get("/v1/sessions", params={"cursor": cursor}, headers=h)
        assert r.status_code == 422, (cursor, r.text)


async def test_nothing_is_before_the_first_event(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    h = acme.headers
    assert (
        await client.post("/v1/sessions", json={"session_id": "s1"}, headers=h)
    ).status_code == 201
    for before in ("0", "0-0"):
        r = await client.get("/v1/sessions/s1/events", params={"before": before}, headers=h)
        assert r.status_code == 200 and r.json() == {"data": []}, r.text
    r = await client.get("/v1/sessions/nope/events", params={"before": "0"}, headers=h)
    assert r.status_code == 404
