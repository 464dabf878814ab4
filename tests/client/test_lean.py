"""The async client's lean HTTP/1.1 path (``_lean``) against a scripted server on a real socket:
framing (Content-Length, chunked, no body, ``Connection: close``), connection reuse and expiry,
and what becomes of a connection after a timeout, a cut-off answer or a cancellation. The
service itself is reached this way in ``test_e2e.py`` and the fault suites.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from redis_sessions_client import ServerError, SessionClient, SessionNotFound, _lean
from redis_sessions_client import _retry as retry_module
from redis_sessions_client._lean import LeanHttp, usable

from tests.client.test_public_api import RAW_INFO


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class Cut:
    """Send these bytes, then close the connection."""

    data: bytes


# What the server does with a request: the bytes to answer, or None to say nothing (and hold
# the connection open until the client goes), "close" to close the connection at once, or Cut.
Answer = bytes | str | Cut | None


@dataclass
class ScriptedServer:
    answer: Callable[[Seen], Answer]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {
                    k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
                }
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                seen = Seen(method, target, headers, body, number)
                self.seen.append(seen)
                self.received.set()
                answer = self.answer(seen)
                if answer == "close":
                    break
                if answer is None:
                    await reader.read()  # until the client closes
                    break
                if isinstance(answer, Cut):
                    writer.write(answer.data)
                    await writer.drain()
                    break
                assert isinstance(answer, bytes)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(answer: Callable[[Seen], Answer]) -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer(answer)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        for writer in srv.writers:
            writer.close()
        server.close()
        await server.wait_closed()


def ok(body: bytes = b'{"ok":true}', *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"{head}\r\n"
    ).encode() + body


def lean_of(srv: ScriptedServer, path: str = "") -> LeanHttp:
    return LeanHttp(f"http://127.0.0.1:{srv.port}{path}", {"Authorization": "Bearer k"})


async def test_requests_share_one_connection_and_carry_headers_body_and_query() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv, "/prefix/")
        for _ in range(3):
            response = await lean.request(
                "POST",
                "/v1/x",
                json={"a": "é"},
                params=[("label", "k=v"), ("limit", 5)],
                headers={"Idempotency-Key": "abc"},
                within=5,
            )
            assert response.status_code == 200 and response.json() == {"ok": True}
        await lean.aclose()
    assert srv.connections == 1
    first = srv.seen[0]
    assert first.target == "/prefix/v1/x?label=k%3Dv&limit=5"
    assert first.headers["authorization"] == "Bearer k"
    assert first.headers["idempotency-key"] == "abc"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["host"] == f"127.0.0.1:{srv.port}"
    assert first.body == '{"a":"é"}'.encode()


async def test_chunked_empty_and_closing_answers() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n5;ext=1\r\n:[1]}\r\n0\r\nx-trailer: 1\r\n\r\n',
            b"HTTP/1.1 204 No Content\r\n\r\n",
            ok(b"{}", "connection: close"),
            ok(b"[]"),
        ]
    )
    async with scripted(lambda seen: next(answers)) as srv:
        lean = lean_of(srv)
        assert (await lean.request("GET", "/a", within=5)).json() == {"a": [1]}
        empty = await lean.request("DELETE", "/b", within=5)
        assert empty.status_code == 204 and empty.content == b""
        assert (await lean.request("GET", "/c", within=5)).json() == {}
        assert (await lean.request("GET", "/d", within=5)).json() == []
        await lean.aclose()
    # the first three answers came on one connection; the one that said close ended it
    assert [s.connection for s in srv.seen] == [1, 1, 1, 2]


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv)
        await lean.request("GET", "/a", within=5)
        srv.writers[0].close()  # the server ends the idle connection
        await asyncio.sleep(0.05)
        assert (await lean.request("GET", "/b", within=5)).status_code == 200
        await lean.aclose()
    assert [s.connection for s in srv.seen] == [1, 2]


async def test_an_idle_connection_older_than_the_expiry_is_not_reused() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv)
        await lean.request("GET", "/a", within=5)
        await lean.request("GET", "/b", within=5)
        age(lean, _lean.IDLE_EXPIRY_S)
        await lean.request("GET", "/c", within=5)
        await lean.aclose()
    assert [s.connection for s in srv.seen] == [1, 1, 2]


def age(lean: LeanHttp, seconds: float) -> None:
    """Make every idle connection ``seconds`` older (no test waits out an expiry: on a busy
    machine a wait can stretch past one that should not have passed yet)."""
    for conn in lean._idle:
        conn.idle_since -= seconds


async def test_after_a_timeout_the_late_answer_is_never_read_as_the_next_one() -> None:
    async with scripted(lambda seen: None if seen.target == "/slow" else ok()) as srv:
        lean = lean_of(srv)
        with pytest.raises(httpx.ReadTimeout):
            await lean.request("GET", "/slow", within=0.1)
        assert (await lean.request("GET", "/fast", within=5)).json() == {"ok": True}
        await lean.aclose()
    assert [s.connection for s in srv.seen] == [1, 2]


async def test_a_cancelled_request_leaves_no_connection_behind() -> None:
    async with scripted(lambda seen: None if seen.target == "/slow" else ok()) as srv:
        lean = lean_of(srv)
        task = asyncio.create_task(lean.request("GET", "/slow", within=5))
        await srv.received.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await lean.request("GET", "/fast", within=5)).status_code == 200
        await lean.aclose()
    assert [s.connection for s in srv.seen] == [1, 2]


async def test_a_cut_off_answer_is_a_protocol_error_and_its_connection_is_dropped() -> None:
    async with scripted(lambda seen: Cut(ok()[:-3]) if seen.target == "/cut" else ok()) as srv:
        lean = lean_of(srv)
        with pytest.raises(httpx.RemoteProtocolError):
            await lean.request("GET", "/cut", within=5)
        with pytest.raises(httpx.RemoteProtocolError):  # no answer at all
            srv.answer = lambda seen: "close"
            await lean.request("GET", "/none", within=5)
        srv.answer = lambda seen: ok()
        assert (await lean.request("GET", "/next", within=5)).status_code == 200
        await lean.aclose()
    assert [s.connection for s in srv.seen] == [1, 2, 3]


async def test_the_client_retries_repeatable_calls_over_a_fresh_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retry_module, "BACKOFF_BASE_S", 0.001)
    replies = iter(["close", ok(RAW_INFO_BYTES)])
    async with scripted(lambda seen: next(replies)) as srv:
        async with SessionClient(f"http://127.0.0.1:{srv.port}", api_key="k") as client:
            info = await client.get_session_metadata("s1")
        assert info.session_id == RAW_INFO["session_id"]
    assert [s.connection for s in srv.seen] == [1, 2]


async def test_a_create_is_not_repeated_after_the_connection_drops() -> None:
    async with (
        scripted(lambda seen: "close") as srv,
        SessionClient(f"http://127.0.0.1:{srv.port}", api_key="k") as client,
    ):
        with pytest.raises(ServerError, match="cannot reach"):
            await client.create_session(session_id="s1")
    assert len(srv.seen) == 1


async def test_errors_are_mapped_as_for_httpx() -> None:
    body = b'{"type":"about:blank","title":"Not Found","status":404,"detail":"no session"}'
    answer = (
        f"HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with (
        scripted(lambda seen: answer) as srv,
        SessionClient(f"http://127.0.0.1:{srv.port}", api_key="k") as client,
    ):
        with pytest.raises(SessionNotFound, match="no session"):
            await client.get_session_metadata("s1")


async def test_nothing_listening_is_retried_then_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retry_module, "BACKOFF_BASE_S", 0.001)
    async with scripted(lambda seen: ok()) as srv:
        port = srv.port
    async with SessionClient(f"http://127.0.0.1:{port}", api_key="k", max_retries=2) as client:
        with pytest.raises(ServerError, match="cannot reach") as caught:
            await client.create_session(session_id="s1")  # not repeatable, but never sent
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_used_only_for_plain_http_without_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert usable("http://sessions:8000")
    assert not usable("https://sessions:8000")
    assert not usable("http://user:pw@sessions:8000")  # httpx sends Basic auth
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not usable("http://sessions:8000")


RAW_INFO_BYTES = httpx.Response(200, json=RAW_INFO).content


async def test_a_header_value_with_a_line_break_is_refused_not_sent() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv)
        with pytest.raises(httpx.LocalProtocolError):
            await lean.request("GET", "/a", headers={"Idempotency-Key": "k\r\nX-Evil: 1"}, within=5)
        with pytest.raises(httpx.LocalProtocolError):
            LeanHttp(f"http://127.0.0.1:{srv.port}", {"Authorization": "Bearer k\nX-Evil: 1"})
        await lean.aclose()
    assert srv.seen == []


async def test_json_that_is_not_json_is_refused_as_by_httpx() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv)
        with pytest.raises(ValueError):
            await lean.request("POST", "/a", json={"score": float("nan")}, within=5)
        with pytest.raises(TypeError):
            await lean.request("POST", "/a", json={"when": object()}, within=5)
        await lean.aclose()
    assert srv.seen == []


async def test_stopping_the_client_closes_the_connection_of_a_call_in_flight() -> None:
    async with scripted(lambda seen: None) as srv:  # never answers
        client = SessionClient(f"http://127.0.0.1:{srv.port}", api_key="k", max_retries=0)
        await client.start()
        pool = client._lean
        assert pool is not None
        call = asyncio.create_task(client.get_session_metadata("s1"))
        await srv.received.wait()
        await client.stop()
        with pytest.raises(ServerError):  # its connection was closed under it
            await call
        assert pool._idle == [] and pool._busy == set()


async def test_a_close_the_event_loop_has_not_seen_yet_is_seen_before_reuse() -> None:
    async with (
        scripted(lambda seen: ok(RAW_INFO_BYTES)) as srv,
        SessionClient(f"http://127.0.0.1:{srv.port}", api_key="k") as client,
    ):
        await client.get_session_metadata("s0")
        srv.writers[0].close()  # the server ends the idle connection...
        await asyncio.sleep(0)
        time.sleep(0.2)  # noqa: ASYNC251  (the app blocks its loop: nothing reads the close)
        await client.create_session(session_id="s1")  # not repeatable: must not meet it
    assert [s.connection for s in srv.seen] == [1, 2]


async def test_stale_idle_connections_are_closed_whichever_is_taken() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv)
        await asyncio.gather(*(lean.request("GET", "/a", within=5) for _ in range(5)))
        assert len(lean._idle) == 5
        age(lean, _lean.IDLE_EXPIRY_S)
        await lean.request("GET", "/b", within=5)
        assert len(lean._idle) == 1  # the four expired ones were closed, not kept
        await lean.aclose()


async def test_the_timeout_bounds_each_silence_not_a_steady_answer() -> None:
    body = b"[" + b",".join(b"%d" % i for i in range(20_000)) + b"]"
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        step = len(body) // 6 + 1
        for i in range(0, len(body), step):  # 6 pieces, 0.1 s apart: 0.6 s in all
            await asyncio.sleep(0.1)
            writer.write(body[i : i + step])
            await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    lean = LeanHttp(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", {})
    try:
        response = await lean.request("GET", "/slow", within=0.4)
        assert len(response.json()) == 20_000
    finally:
        await lean.aclose()
        server.close()
        await server.wait_closed()


async def test_no_timeout_at_all() -> None:
    async with scripted(lambda seen: ok()) as srv:
        lean = lean_of(srv)
        assert (await lean.request("GET", "/a", within=None)).status_code == 200
        await lean.aclose()
