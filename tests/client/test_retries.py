"""Retry policy and error mapping at the HTTP edge, against scripted answers (httpx.MockTransport).

The same mapping is exercised against the real service in ``test_inprocess.py``; here the answers
the real service rarely gives (503, 429, dropped connections) are scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis_sessions_client import (
    AuthenticationError,
    ProtocolError,
    RateLimited,
    ServerError,
    SessionClient,
    SessionError,
    SessionNotFound,
    SyncSessionClient,
    ValidationError,
)
from redis_sessions_client import _retry as retry_module

from tests.client.test_public_api import RAW_INFO

Script = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "BACKOFF_BASE_S", 0.001)


def problem(status: int, title: str, **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": title.lower()}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **headers}
    )


class Scripted:
    """Answers requests from a list of responses (or exceptions), recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_client(script: Any, **kw: Any) -> SessionClient:
    return SessionClient(
        "http://sessions.test", api_key="sk_acme_x", transport=httpx.MockTransport(script), **kw
    )


async def test_get_is_retried_on_503_and_dropped_connections() -> None:
    script = Scripted(
        problem(503, "Store unavailable"),
        httpx.ReadError("connection reset"),
        httpx.Response(200, json=RAW_INFO),
    )
    async with make_client(script) as client:
        info = await client.get_session_metadata("user-1-main")
    assert info.session_id == "user-1-main"
    assert len(script.requests) == 3
    assert script.requests[0].headers["authorization"] == "Bearer sk_acme_x"


async def test_retries_are_bounded_then_server_error() -> None:
    script = Scripted(problem(503, "Store unavailable"))
    async with make_client(script, max_retries=2) as client:
        with pytest.raises(ServerError) as info:
            await client.get_session_metadata("s1")
    assert info.value.status_code == 503
    assert len(script.requests) == 3


async def test_send_retries_with_one_idempotency_key() -> None:
    script = Scripted(
        httpx.Response(200, json=RAW_INFO),
        problem(503, "Store unavailable"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.Response(202, json={"message_id": "9-0", "duplicate": True}),
    )
    async with make_client(script) as client:
        session = await client.resume_session("user-1-main")
        assert await session.send({"prompt": "hi"}) == "9-0"
    sends = script.requests[1:]
    assert len(sends) == 3
    keys = {r.headers["idempotency-key"] for r in sends}
    assert len(keys) == 1 and len(keys.pop()) >= 16


async def test_each_send_has_its_own_idempotency_key() -> None:
    script = Scripted(
        httpx.Response(200, json=RAW_INFO),
        httpx.Response(202, json={"message_id": "9-0", "duplicate": False}),
    )
    async with make_client(script) as client:
        session = await client.resume_session("user-1-main")
        await session.send("one")
        await session.send(prompt="two")
    keys = [r.headers["idempotency-key"] for r in script.requests[1:]]
    assert len(set(keys)) == 2


async def test_create_is_not_repeated_after_a_503_but_is_after_a_refused_connection() -> None:
    script = Scripted(problem(503, "Store unavailable"))
    async with make_client(script) as client:
        with pytest.raises(ServerError):
            await client.create_session(session_id="s1")
    assert len(script.requests) == 1

    script = Scripted(httpx.ConnectError("refused"), httpx.Response(201, json=RAW_INFO))
    async with make_client(script) as client:
        session = await client.create_session(session_id="user-1-main")
    assert session.session_id == "user-1-main" and len(script.requests) == 2


async def test_429_waits_retry_after_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    script = Scripted(problem(429, "Limit exceeded", **{"Retry-After": "2"}))
    async with make_client(script, max_retries=3) as client:
        with pytest.raises(RateLimited) as info:
            await client.create_session()
    assert slept == [2.0, 2.0, 2.0]
    assert info.value.retry_after == 2.0 and info.value.status_code == 429

    script = Scripted(
        problem(429, "Limit exceeded", **{"Retry-After": "1"}), httpx.Response(201, json=RAW_INFO)
    )
    async with make_client(script) as client:
        await client.create_session()
    assert len(script.requests) == 2


async def test_unreachable_service_is_a_server_error_without_status() -> None:
    script = Scripted(httpx.ConnectError("refused"))
    async with make_client(script, max_retries=1) as client:
        with pytest.raises(ServerError) as info:
            await client.list_sessions()
    assert info.value.status_code is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    ("status", "title", "error"),
    [
        (404, "Session not found", SessionNotFound),
        (422, "Invalid input", ValidationError),
        (413, "Payload too large", ValidationError),
        (400, "Malformed JSON", ValidationError),
        (401, "Unauthorized", AuthenticationError),
        (403, "Forbidden", AuthenticationError),
        (500, "Internal error", ServerError),
        (507, "Insufficient storage", ServerError),
    ],
)
async def test_status_mapping(status: int, title: str, error: type[SessionError]) -> None:
    script = Scripted(problem(status, title))
    async with make_client(script, max_retries=0) as client:
        with pytest.raises(error) as info:
            await client.get_session_metadata("s1")
    assert info.value.status_code == status
    assert info.value.title == title and info.value.problem["status"] == status


async def test_other_statuses_raise_the_base_error() -> None:
    script = Scripted(problem(409, "Conflict"))
    async with make_client(script) as client:
        with pytest.raises(SessionError) as info:
            await client.create_session(session_id="s1")
    assert type(info.value) is SessionError and info.value.status_code == 409


async def test_api_key_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONS_API_KEY", "sk_env_y")
    script = Scripted(httpx.Response(200, json={"data": [RAW_INFO], "next_cursor": None}))
    async with SessionClient(transport=httpx.MockTransport(script)) as client:
        assert await client.get_last_session_id() == "user-1-main"
    assert script.requests[0].headers["authorization"] == "Bearer sk_env_y"
    assert str(script.requests[0].url).startswith("http://127.0.0.1:8000/v1/sessions?")


async def test_gateway_errors_are_retried_for_repeatable_calls_only() -> None:
    script = Scripted(
        problem(502, "Bad gateway"),
        problem(504, "Gateway timeout"),
        httpx.Response(200, json=RAW_INFO),
    )
    async with make_client(script) as client:
        await client.get_session_metadata("user-1-main")
    assert len(script.requests) == 3

    script = Scripted(problem(502, "Bad gateway"), httpx.Response(201, json=RAW_INFO))
    async with make_client(script) as client:
        with pytest.raises(ServerError) as info:
            await client.create_session(session_id="s1")  # may have been created: not repeated
    assert info.value.status_code == 502 and len(script.requests) == 1


async def test_the_deadline_ends_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Scripted(problem(503, "Store unavailable", **{"Retry-After": "30"}))
    async with make_client(script, deadline=5, max_retries=10) as client:
        with pytest.raises(ServerError) as info:
            await client.get_session_metadata("s1")  # a 30 s wait would end past the deadline
    assert info.value.status_code == 503 and len(script.requests) == 1

    script = Scripted(problem(503, "Store unavailable"))
    started = asyncio.get_running_loop().time()
    async with make_client(script, deadline=0.3, max_retries=1000) as client:
        with pytest.raises(ServerError):
            await client.get_session_metadata("s1")
    assert asyncio.get_running_loop().time() - started < 2
    assert 1 < len(script.requests) < 1000


async def test_an_html_page_on_the_event_stream_fails_the_wait_clearly() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events/stream"):
            page = b"<!doctype html><html><body>Welcome to nginx!</body></html>"
            return httpx.Response(200, content=page, headers={"content-type": "text/html"})
        if request.url.path.endswith("/messages"):
            return httpx.Response(202, json={"message_id": "9-0", "duplicate": False})
        return httpx.Response(200, json=RAW_INFO)

    async with make_client(answer) as client:
        session = await client.resume_session("user-1-main")
        with pytest.raises(ProtocolError, match="Welcome to nginx") as info:
            await session.send_and_wait({"prompt": "hi"}, timeout=10)
    assert "text/html" in str(info.value)


def test_the_sync_client_retries_and_maps_errors_the_same_way() -> None:
    script = Scripted(
        problem(502, "Bad gateway"),
        httpx.ReadError("connection reset"),
        httpx.Response(200, json=RAW_INFO),
        problem(503, "Store unavailable"),
        httpx.Response(202, json={"message_id": "9-0", "duplicate": True}),
        problem(404, "Session not found"),
        problem(502, "Bad gateway"),
    )
    transport = httpx.MockTransport(script)
    with SyncSessionClient("http://sessions.test", api_key="k", transport=transport) as client:
        session = client.resume_session("user-1-main")
        assert session.send("hi") == "9-0"
        keys = {r.headers["idempotency-key"] for r in script.requests[3:5]}
        assert len(keys) == 1
        with pytest.raises(SessionNotFound):
            client.delete_session("gone")
        with pytest.raises(ServerError) as info:
            client.create_session()
    assert info.value.status_code == 502 and len(script.requests) == 7


HTML = b"<!doctype html><html><body>Sign in to continue</body></html>"
ANSWERS = {
    "html": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
    % (len(HTML), HTML),
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: https://login.example/\r\n"
    b"Content-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
async def test_a_page_or_redirect_in_place_of_the_api_is_a_protocol_error(answer: str) -> None:
    """An ingress's maintenance page or a login redirect, on a real socket: the async client
    (its lean HTTP path) and the sync one (httpx) both raise ProtocolError, once, unretried."""
    served: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(ANSWERS[answer])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with SessionClient(url, api_key="k") as client:
            with pytest.raises(ProtocolError) as info:
                await client.list_sessions()
        expected = "Sign in to continue" if answer == "html" else "302 to https://login.example/"
        assert expected in str(info.value)

        def sync_call() -> None:
            with SyncSessionClient(url, api_key="k") as sync, pytest.raises(ProtocolError):
                sync.get_session_metadata("s1")

        await asyncio.to_thread(sync_call)
    finally:
        server.close()
    assert len(served) == 2


@contextlib.asynccontextmanager
async def answers_once(status: bytes, problem: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that answers every other request with ``status`` and ``problem`` and reads
    the ones between, never answering them: (its URL, the request heads it read)."""
    served: list[bytes] = []
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await reader.readuntil(b"\r\n\r\n"))
        if len(served) % 2 == 0:
            held.append(writer)  # the retry: read, never answered
            return
        # "Connection: close", as a server that closes after answering says: else a client
        # may send the retry on this connection, closing under it, and meet a reset (a network
        # failure of its own, after which the 503 is no longer the service's last answer)
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/problem+json\r\nRetry-After: 0\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (status, len(problem), problem)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", served
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_retry_cut_short_by_the_deadline_fails_with_the_answer_it_retried() -> None:
    """The first try is answered 503, the retry never is: at the deadline both clients raise
    the service's 503, not a bare "cannot reach"."""
    problem = b'{"title":"Store unavailable","status":503}'
    async with answers_once(b"503 Service Unavailable", problem) as (url, served):
        async with SessionClient(url, api_key="k", deadline=0.5) as client:
            with pytest.raises(ServerError, match="Store unavailable") as info:
                await client.list_sessions()
        assert info.value.status_code == 503 and len(served) == 2

        def sync_call() -> None:
            with SyncSessionClient(url, api_key="k", deadline=0.5) as sync:
                with pytest.raises(ServerError, match="Store unavailable") as info:
                    sync.get_session_metadata("s1")
                assert info.value.status_code == 503

        await asyncio.to_thread(sync_call)
        assert len(served) == 4


async def test_a_create_whose_retry_may_have_been_done_is_not_reported_refused() -> None:
    """A create answered 429 (refused before anything was done) is retried; that retry reaches
    the service and gets no answer before the deadline: the create may have happened, so the
    error is "cannot reach", not the 429 that says nothing was done."""
    problem = b'{"title":"Too many requests","status":429}'
    async with answers_once(b"429 Too Many Requests", problem) as (url, served):
        async with SessionClient(url, api_key="k", deadline=0.5) as client:
            with pytest.raises(ServerError, match="cannot reach") as info:
                await client.create_session(session_id="s1")
        assert not isinstance(info.value, RateLimited) and len(served) == 2

        def sync_call() -> None:
            with (
                SyncSessionClient(url, api_key="k", deadline=0.5) as sync,
                pytest.raises(ServerError, match="cannot reach"),
            ):
                sync.create_session(session_id="s1")

        await asyncio.to_thread(sync_call)
        assert len(served) == 4
