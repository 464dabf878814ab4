"""Malformed and hostile requests: broken JSON, JSON of the wrong shape, wrong content types,
bodies over the limit (refused without reading them), very long headers, and clients that send
slowly or stall. Each gets a 4xx problem, never a 5xx, and no client can hold a request open.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from redis.asyncio import Redis

from service import keys as K
from tests.security.conftest import (
    BODY_TIMEOUT_SECONDS,
    MAX_MESSAGE_BYTES,
    PREFIX,
    LiveServer,
    TenantKey,
    assert_problem,
    raw_exchange,
    snapshot,
)

BODY_LIMIT = MAX_MESSAGE_BYTES + 64 * 1024  # service.api.main.BODY_HEADROOM
JSON = {"Content-Type": "application/json"}

BODY_ROUTES = [
    ("POST", "/v1/sessions"),
    ("PATCH", "/v1/sessions/s1"),
    ("POST", "/v1/sessions/s1/messages"),
    ("PUT", "/v1/sessions/s1/bookmarks/b1"),
    ("POST", "/v1/admin/tenants"),
    ("PATCH", "/v1/admin/tenants/alpha"),
]


@pytest.fixture
async def auth(
    client: httpx.AsyncClient, alpha: TenantKey, admin_headers: dict[str, str]
) -> dict[str, dict[str, str]]:
    r = await client.post("/v1/sessions", json={"session_id": "s1"}, headers=alpha.headers)
    assert r.status_code == 201
    return {"tenant": alpha.headers, "admin": admin_headers}


def headers_for(url: str, auth: dict[str, dict[str, str]]) -> dict[str, str]:
    return auth["admin"] if url.startswith("/v1/admin/") else auth["tenant"]


MALFORMED = [
    b'{"prompt": "hi",',
    b'{"prompt" "hi"}',
    b"{'prompt': 'hi'}",
    b'{"prompt": "hi"} trailing',
    b'{"prompt": "\x00"}',  # raw control character inside a string
    b"\xff\xfe\xfd",
    b'{"prompt": "\xc3\x28"}',  # invalid UTF-8
    b"[" * 50_000,  # deeper than any parser recursion limit
    b'{"a":' * 10_000,
    b'{"ttl_seconds": ' + b"9" * 5_000 + b"}",  # more digits than Python parses
]


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]], method: str, url: str
) -> None:
    for body in MALFORMED:
        headers = {**headers_for(url, auth), **JSON}
        r = await client.request(method, url, content=body, headers=headers)
        assert_problem(r, 400)


NOT_OBJECTS = [b"[]", b'"prompt"', b"1", b"true", b"[1, 2]", b"NaN", b"-Infinity"]


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES)
async def test_json_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]], method: str, url: str
) -> None:
    for body in NOT_OBJECTS:
        headers = {**headers_for(url, auth), **JSON}
        r = await client.request(method, url, content=body, headers=headers)
        assert_problem(r, 422)
        assert r.json()["errors"][0]["loc"] == ["body"]
    # No body at all: a 422 naming what is missing, except where the body is optional.
    for body in (b"", b"null"):
        headers = {**headers_for(url, auth), **JSON}
        r = await client.request(method, url, content=body, headers=headers)
        if url.endswith("/bookmarks/b1"):
            assert r.status_code == 200, r.text  # a bookmark needs no description
        else:
            assert_problem(r, 422)


async def test_wrong_values_inside_json_are_422(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]], real_redis: Redis
) -> None:
    h = auth["tenant"]
    before = await snapshot(real_redis)
    for body in (
        {"ttl_seconds": float("nan")},
        {"ttl_seconds": 1e400},
        {"ttl_seconds": 10**30},
        {"ttl_seconds": -1},
        {"ttl_seconds": 1.5},
        {"labels": {"a": None}},
        {"labels": {"a": 1}},
        {"labels": [["a", "b"]]},
        {"labels": {"a": {"b": "c"}}},
        {"streaming": "maybe"},
        {"model": "m" * 201},
        {"name": ["x"]},
        {"session_id": None, "unknown": True},
        {"session_id": 12},
    ):
        r = await client.post("/v1/sessions", content=json.dumps(body), headers={**h, **JSON})
        assert_problem(r, 422)
    for body in ({"prompt": ""}, {"prompt": None}, {"prompt": ["hi"]}, {"prompt": "x", "y": 1}):
        r = await client.post("/v1/sessions/s1/messages", json=body, headers=h)
        assert_problem(r, 422)
    admin = auth["admin"]
    for body in (
        {"id": "t1", "limits": {"rate_limit_per_second": -1}},
        {"id": "t1", "limits": {"max_sessions": 0}},
        {"id": "t1", "retention": {"max_age_seconds": 1}},
        {"id": "T1"},
        {"id": "_admin"},
        {"id": "a" * 41},
    ):
        r = await client.post("/v1/admin/tenants", json=body, headers=admin)
        assert_problem(r, 422)
    assert await snapshot(real_redis) == before


async def test_what_python_parses_and_json_has_not_is_422_and_stores_nothing(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]], real_redis: Redis
) -> None:
    """JSON's grammar allows ``"\\ud800"``, but no UTF-8 text holds it: taken, it was stored
    and then failed every list page of the tenant. A pair (an emoji) is text. NaN, Infinity
    and 1e999 (infinity) are no JSON at all: an item stored them as null."""
    h = {**auth["tenant"], **JSON}
    r = await client.post("/v1/sessions", json={"session_id": "items", "mode": "store"}, headers=h)
    assert r.status_code == 201, r.text
    before = await snapshot(real_redis)
    for method, url, body in (
        ("POST", "/v1/sessions", b'{"session_id": "sur", "labels": {"k": "\\ud800"}}'),
        ("POST", "/v1/sessions", b'{"labels": {"\\udfff": "v"}}'),
        ("POST", "/v1/sessions", b'{"system_message": "a \\ud83d\\ude00 b \\ud83d"}'),
        ("PATCH", "/v1/sessions/s1", b'{"labels": {"k": "\\uDC00"}}'),
        ("POST", "/v1/sessions/s1/messages", b'{"prompt": "\\ud800"}'),
        ("PUT", "/v1/sessions/s1/bookmarks/b1", b'{"description": "\\ud800"}'),
        ("POST", "/v1/sessions/items/items", b'{"items": [{"content": "\\ud800"}]}'),
        ("POST", "/v1/sessions/items/items", b'{"items": [{"\\ud800": "x"}]}'),
        # the UTF-8 bytes of a surrogate, which Python's parser decodes as one
        ("POST", "/v1/sessions", b'{"session_id": "raw", "labels": {"k": "\xed\xa0\x80"}}'),
        ("PATCH", "/v1/sessions/s1", b'{"labels": {"k": "\xed\xb0\x80"}}'),
    ):
        r = await client.request(method, url, content=body, headers=h)
        assert_problem(r, 422)
        assert "surrogate" in r.json()["detail"], r.text
    for body in (
        b'{"items": [{"a": NaN}]}',
        b'{"items": [{"a": -Infinity}]}',
        b'{"items": [{"a": 1e999, "b": 12345678901234567890123}]}',
        b'{"items": [{"a": [1, 2, Infinity]}]}',
        b'{"items": [{"n": 1' + b"0" * 400 + b"}]}",  # beyond a double: Infinity to a client
    ):
        r = await client.post("/v1/sessions/items/items", content=body, headers=h)
        assert_problem(r, 422)
        assert "NaN, Infinity" in r.json()["detail"], r.text
    assert await snapshot(real_redis) == before
    assert (await client.get("/v1/sessions", headers=h)).status_code == 200
    body = b'{"session_id": "emoji", "labels": {"k": "\\ud83d\\ude00"}, "name": "\\\\ud800"}'
    r = await client.post("/v1/sessions", content=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["labels"] == {"k": "\U0001f600"} and r.json()["name"] == "\\ud800"
    # text that merely reads like them, and numbers a double holds, are stored as sent
    body = b'{"items": [{"NaN": "Infinity", "e": 1e300, "big": 12345678901234567890123}]}'
    r = await client.post("/v1/sessions/items/items", content=body, headers=h)
    assert r.status_code == 201, r.text
    r = await client.get("/v1/sessions/items/items", headers=h)
    assert r.json()["data"] == [{"NaN": "Infinity", "e": 1e300, "big": 12345678901234567890123}]
    # UTF-16 and UTF-32 (which Python's parser reads, and which the checks above do not) are
    # no JSON a service exchanges (RFC 8259): refused before anything reads them
    for encoding in ("utf-16-le", "utf-16", "utf-32-be"):
        body = '{"session_id": "wide", "labels": {"k": "\\ud800"}}'.encode(encoding)
        assert_problem(await client.post("/v1/sessions", content=body, headers=h), 400)
        body = '{"items": [{"a": NaN}]}'.encode(encoding)
        assert_problem(await client.post("/v1/sessions/items/items", content=body, headers=h), 400)
    assert (await client.get("/v1/sessions/wide", headers=h)).status_code == 404
    # a byte order mark is no reason to refuse, and too deep a nesting is the parser's 400
    body = b'\xef\xbb\xbf{"items": [{"t": "NaN"}]}'
    assert (
        await client.post("/v1/sessions/items/items", content=body, headers=h)
    ).status_code == 201
    deep = b'{"items": [{"t": "NaN", "d": ' + b"[" * 1030 + b"]" * 1030 + b"}]}"
    assert_problem(await client.post("/v1/sessions/items/items", content=deep, headers=h), 400)


async def test_a_session_stored_with_a_lone_surrogate_before_the_refusal_still_reads(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]], real_redis: Redis
) -> None:
    """Labels stored before lone surrogates were refused (JSON escapes them) read as U+FFFD:
    the tenant's listing, the session and its export still answer."""
    h = auth["tenant"]
    meta = K.session_keys(PREFIX, "alpha", "s1").meta
    await real_redis.hset(meta, "labels", '{"k\\udfff": "v\\ud800", "ok": "\\ud83d\\ude00"}')
    want = {"k\ufffd": "v\ufffd", "ok": "\U0001f600"}
    r = await client.get("/v1/sessions", headers=h)
    assert r.status_code == 200, r.text
    assert [s["labels"] for s in r.json()["data"]] == [want]
    r = await client.get("/v1/sessions/s1", headers=h)
    assert r.status_code == 200 and r.json()["labels"] == want
    r = await client.get("/v1/sessions/s1/export", headers=h)
    assert r.status_code == 200 and r.json()["session"]["labels"] == want


async def test_a_byte_order_mark_is_ignored(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]]
) -> None:
    """RFC 8259 lets a parser ignore a UTF-8 byte order mark; Python's does."""
    body = b'\xef\xbb\xbf{"session_id": "bom"}'
    r = await client.post("/v1/sessions", content=body, headers={**auth["tenant"], **JSON})
    assert r.status_code == 201 and r.json()["session_id"] == "bom"


async def test_duplicate_keys_take_the_last_value(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]]
) -> None:
    """As in every common JSON parser: the last of repeated members wins, and it is validated
    like any other value (a first, valid value does not hide a second, invalid one)."""
    h = {**auth["tenant"], **JSON}
    r = await client.post(
        "/v1/sessions", content=b'{"session_id": "x", "session_id": "y"}', headers=h
    )
    assert r.status_code == 201 and r.json()["session_id"] == "y"
    body = b'{"session_id": "ok", "session_id": "a:b"}'
    assert_problem(await client.post("/v1/sessions", content=body, headers=h), 422)
    body = b'{"labels": {"k": "v", "k": "w"}}'
    assert (await client.post("/v1/sessions", content=body, headers=h)).json()["labels"] == {
        "k": "w"
    }


CONTENT_TYPES = [
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonx",
    "application/json-patch",
    "json",
    "*/*",
    "application/octet-stream",
]


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES)
async def test_wrong_content_types_are_415(
    client: httpx.AsyncClient, auth: dict[str, dict[str, str]], method: str, url: str
) -> None:
    body = b'{"prompt": "hi"}'
    for content_type in CONTENT_TYPES:
        headers = {**headers_for(url, auth), "Content-Type": content_type}
        r = await client.request(method, url, content=body, headers=headers)
        assert_problem(r, 415)
    headers = {k: v for k, v in headers_for(url, auth).items()}  # none at all
    assert_problem(await client.request(method, url, content=body, headers=headers), 415)
    for content_type in ("application/json; charset=utf-8", "application/problem+json"):
        headers = {**headers_for(url, auth), "Content-Type": content_type}
        r = await client.request(method, url, content=b"{", headers=headers)
        assert_problem(r, 400)  # accepted as JSON, then found malformed


async def test_body_over_the_limit_is_refused_before_it_is_read(
    live: LiveServer, live_alpha: TenantKey
) -> None:
    """413 from the headers alone: the server answers at once, without waiting for the body it
    was promised, and closes the connection so the rest is never read."""
    head = (
        "POST /v1/sessions/s1/messages HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {live_alpha.key}\r\nContent-Type: application/json\r\n"
    )
    for length in (BODY_LIMIT + 1, 10**12, 10**19):
        reply = await raw_exchange(
            live, f"{head}Content-Length: {length}\r\n\r\n".encode() + b'{"prompt": "', read_for=5
        )
        assert reply.status == 413, reply.data[:300]
        assert reply.closed and reply.seconds < 2
        assert reply.header("connection") == "close"
        assert reply.header("content-type") == "application/problem+json"
        assert json.loads(reply.body)["limit"] == BODY_LIMIT
    # A length past 64 bits never reaches the service: the HTTP parser refuses it.
    reply = await raw_exchange(live, f"{head}Content-Length: {10**30}\r\n\r\n".encode())
    assert reply.status == 400 and reply.closed


async def test_chunked_body_over_the_limit_is_refused_when_it_passes_it(
    live: LiveServer, live_alpha: TenantKey
) -> None:
    head = (
        "POST /v1/sessions HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {live_alpha.key}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 32_768
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    parts = [head] + [framed] * (BODY_LIMIT // len(chunk) + 1)  # just past it; no last chunk
    reply = await raw_exchange(live, *parts, read_for=5)
    assert reply.status == 413, reply.data[:300]
    assert reply.closed
    # Below the limit, the same framing is a normal request.
    body = json.dumps({"session_id": "chunked"}).encode()
    small = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    reply = await raw_exchange(
        live, head.replace(b"chunked\r\n", b"chunked\r\nConnection: close\r\n"), small
    )
    assert reply.status == 201, reply.data[:300]


async def test_very_long_header_values(
    live: LiveServer, live_alpha: TenantKey, real_redis: Redis
) -> None:
    long = "a" * 8_000
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.get("/v1/sessions", headers={"Authorization": f"Bearer sk_alpha_{long}"})
        assert_problem(r, 401)
        r = await http.get("/v1/sessions", headers={"Authorization": f"Bearer {long}"})
        assert_problem(r, 401)
        r = await http.get("/v1/sessions", headers={**live_alpha.headers, "X-Request-ID": long})
        assert r.status_code == 200 and r.headers["X-Request-ID"] != long
        r = await http.post("/v1/sessions", json={"session_id": "h"}, headers=live_alpha.headers)
        assert r.status_code == 201
        r = await http.post(
            "/v1/sessions/h/messages",
            json={"prompt": "hi"},
            headers={**live_alpha.headers, "Idempotency-Key": long},
        )
        assert_problem(r, 422)
        r = await http.get(
            "/v1/sessions/h/events/stream", headers={**live_alpha.headers, "Last-Event-ID": long}
        )
        assert_problem(r, 422)
        r = await http.post(
            "/v1/sessions",
            content=b"{}",
            headers={**live_alpha.headers, "Content-Type": f"application/{long}"},
        )
        assert_problem(r, 415)
        r = await http.get("/v1/sessions", params={"cursor": long}, headers=live_alpha.headers)
        assert_problem(r, 422)
        r = await http.get(f"/v1/sessions/{long}", headers=live_alpha.headers)
        assert_problem(r, 422)
        # Heads of 50-100 KB: the HTTP parser refuses a head still incomplete past 16 KiB (400
        # and a close, which the client may see before the 400), but one that arrives whole
        # passes; either way nothing fails. docs/security.md: bound heads at the proxy.
        many = {f"X-H{i}": "v" * 40 for i in range(1_000)}
        for headers in ({"X-Pad": "p" * 100_000}, many):
            try:
                r = await http.get("/v1/sessions", headers={**live_alpha.headers, **headers})
                assert r.status_code in {200, 400, 431}
            except httpx.TransportError:
                pass
        assert (await http.get("/livez")).status_code == 200
    assert await real_redis.dbsize() > 0  # nothing above cleared or broke the store


SLOW = BODY_TIMEOUT_SECONDS + 1.5  # the bound an answer must arrive within


async def test_stalled_and_dripping_bodies_get_408_and_the_connection_closed(
    live: LiveServer, live_alpha: TenantKey
) -> None:
    head = (
        "POST /v1/sessions HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {live_alpha.key}\r\nContent-Type: application/json\r\n"
    )
    started = time.monotonic()
    stalled, dripping, chunked, healthy = await asyncio.gather(
        # headers and a few bytes of a promised body, then nothing
        raw_exchange(live, f'{head}Content-Length: 100\r\n\r\n{{"se'.encode(), read_for=SLOW),
        # one byte every half second: each arrives in time, the whole never does
        raw_exchange(
            live,
            f"{head}Content-Length: 100\r\n\r\n".encode(),
            *[b" "] * 20,
            pause=0.5,
            read_for=SLOW,
        ),
        # a chunked body that never sends its last chunk
        raw_exchange(
            live, f'{head}Transfer-Encoding: chunked\r\n\r\n3\r\n{{"s\r\n'.encode(), read_for=SLOW
        ),
        other_requests_meanwhile(live, live_alpha),
    )
    for reply in (stalled, dripping, chunked):
        assert reply.status == 408, reply.data[:300]
        assert reply.closed
        assert reply.header("content-type") == "application/problem+json"
        assert json.loads(reply.body)["title"] == "Request timeout"
    assert time.monotonic() - started < BODY_TIMEOUT_SECONDS + 10 * 0.5 + 2
    assert healthy == [200] * len(healthy)


async def other_requests_meanwhile(live: LiveServer, who: TenantKey) -> list[int]:
    """While slow clients hold their connections, everyone else is served at once."""
    codes = []
    async with httpx.AsyncClient(base_url=live.url, timeout=2) as http:
        for _ in range(10):
            codes.append((await http.get("/v1/sessions", headers=who.headers)).status_code)
            await asyncio.sleep(0.1)
    return codes


async def test_a_slow_body_that_finishes_in_time_is_served(
    live: LiveServer, live_alpha: TenantKey
) -> None:
    body = json.dumps({"session_id": "slow"}).encode()
    head = (
        "POST /v1/sessions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Authorization: Bearer {live_alpha.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    reply = await raw_exchange(live, head, body[:5], body[5:], pause=BODY_TIMEOUT_SECONDS / 3)
    assert reply.status == 201, reply.data[:300]


@pytest.mark.xfail(
    strict=True,
    reason="uvicorn (0.54, h11) starts no timer before a request's head is complete: a "
    "connection that sends nothing, or stops within its headers, stays open. The service "
    "cannot see such a connection (the app is called once the head is complete); bound it at "
    "the TLS proxy in front (nginx client_header_timeout, HAProxy timeout http-request). See "
    "docs/security.md.",
)
async def test_idle_connections_and_stalled_headers_are_closed(live: LiveServer) -> None:
    bound = 5 + 3  # uvicorn's keep-alive timeout, and some slack
    idle, partial = await asyncio.gather(
        raw_exchange(live, b"", read_for=bound),
        raw_exchange(live, b"GET /livez HTTP/1.1\r\nHost: test\r\n", read_for=bound),
    )
    assert idle.closed and partial.closed
