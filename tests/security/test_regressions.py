"""The pieces behind failures this suite found, without a server: values Python accepts and
Redis refuses (cursor scores, stream ids, expiry windows) are refused before they reach Redis,
and the body bound holds for any ASGI server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from service.api.limits import MAX_WINDOW_MS, window_for
from service.api.middleware import RequestBody
from service.errors import InvalidInput
from service.ids import validate_stream_id
from service.paging import decode_cursor, encode_cursor

MAX = 2**64 - 1


@pytest.mark.parametrize(
    "score", ["nan", "NaN", "infinity", " 5", "5 ", "1_0", "0x10", "5\x00", "\u0663", "", "+", "e5"]
)
def test_cursor_scores_redis_refuses_are_invalid(score: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor(score, "s1"))


@pytest.mark.parametrize("score", ["+inf", "-inf", "inf", "0", "1732246089878", "1.5", "1e999"])
def test_cursor_scores_redis_takes_are_valid(score: str) -> None:
    assert decode_cursor(encode_cursor(score, "s1")) == (score, "s1")


@pytest.mark.parametrize(
    "value",
    [
        f"{MAX}",
        f"{MAX}-0",
        f"0-{MAX}",
        f"{MAX + 1}",
        "1" * 21,
        "\u0661-\u0660",
        "\u00b2",
        "1-",
        "-1",
        "1-1-1",
        "",
    ],
)
def test_stream_ids_redis_refuses_are_invalid(value: str) -> None:
    with pytest.raises(InvalidInput):
        validate_stream_id(value)


@pytest.mark.parametrize("value", ["0", "0-0", "1732246089878-0", f"{MAX - 1}-{MAX - 1}"])
def test_stream_ids_redis_takes_are_valid(value: str) -> None:
    assert validate_stream_id(value) == value


def test_tiny_rates_keep_windows_redis_can_expire() -> None:
    assert window_for(1e-300) == (1, MAX_WINDOW_MS)
    assert window_for(1 / 86_400) == (1, MAX_WINDOW_MS)
    assert window_for(0.5) == (1, 2000)


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and answers with its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def call(
    app: RequestBody, messages: list[Message], headers: dict[str, str], *, stall: bool = False
) -> tuple[int, dict[str, str], Any]:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    content = json.loads(body) if body.startswith(b"{") else body.decode()
    return start["status"], response_headers, content


async def test_body_bound_in_any_asgi_server() -> None:
    app = RequestBody(echo, max_bytes=10, timeout_seconds=0.2)
    chunk = {"type": "http.request", "body": b"12345", "more_body": True}
    last = {"type": "http.request", "body": b"", "more_body": False}
    json_type = {"content-type": "application/json"}
    assert await call(app, [chunk, last], {"content-length": "5", **json_type}) == (200, {}, "5")
    chunked = {"transfer-encoding": "chunked", **json_type}
    assert (await call(app, [chunk, chunk, last], chunked))[2] == "10"
    status, headers, problem = await call(app, [chunk, last], {"content-length": "5"})
    assert (status, problem["title"]) == (415, "Unsupported Media Type")
    assert "connection" not in headers  # the body was read: the connection stays usable
    assert await call(app, [last], {"content-length": "0"}) == (200, {}, "0")

    status, headers, problem = await call(app, [], {"content-length": "11"})
    assert (status, headers["connection"], problem["limit"]) == (413, "close", 10)
    status, _, problem = await call(app, [chunk] * 3, {"transfer-encoding": "chunked"})
    assert (status, problem["title"]) == (413, "Payload too large")

    for headers in ({"content-length": "10"}, {"transfer-encoding": "chunked"}):
        status, response_headers, problem = await call(app, [chunk], headers, stall=True)
        assert (status, response_headers["connection"]) == (408, "close")
        assert problem["type"] == "/problems/request-timeout"
        assert problem["timeout_seconds"] == 0.2
