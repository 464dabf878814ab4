"""End to end: the API under uvicorn and the worker as separate processes, on the suite's Redis.

The walkthrough in ``examples/`` runs against them to completion, and a conversation carries on
with its full context after both processes are killed and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis_sessions_client import (
    Event,
    ServerError,
    SessionClient,
    SessionError,
    SessionNotFound,
    SyncSessionClient,
    ValidationError,
    WaitTimeout,
)

from service.embedded import free_port
from service.tenants import TenantRegistry
from tests.logcheck import assert_json_logs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "persisting_sessions.py"
PREFIX = "e2e"


def sessionctl() -> list[str]:
    script = Path(sys.executable).with_name("sessionctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli.main"]


class Service:
    """The API and one worker as child processes; ``start``/``kill`` may be called repeatedly."""

    def __init__(self, redis_url: str, logs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.env = {
            **os.environ,
            "SESSIONS_REDIS_URL": redis_url,
            "SESSIONS_KEY_PREFIX": PREFIX,
            "SESSIONS_JOB_TIMEOUT_SECONDS": "5",  # a turn killed mid-way is retried soon
            "SESSIONS_DEV_STREAM_DELAY_MS": "200",  # a streaming session's turn takes seconds
            "SESSIONS_LOG_LEVEL": "INFO",
            "SESSIONS_LOG_FORMAT": "json",
        }
        self.procs: list[asyncio.subprocess.Process] = []
        self.starts = 0

    async def _spawn(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}-{self.starts}.log", "wb")  # noqa: ASYNC230, SIM115
        with log:
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=ROOT, env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        self.procs.append(proc)

    async def start(self) -> None:
        self.starts += 1
        await self._spawn("worker", *sessionctl(), "worker")
        await self._spawn(
            "api", *sessionctl(), "serve", "--host", "127.0.0.1", "--port", str(self.port)
        )
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(300):
                if any(p.returncode is not None for p in self.procs):
                    break
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the service did not start:\n{self.output()}")

    async def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        self.procs = []

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
async def service(
    redis_server_url: str, real_redis: Redis, tmp_path: Path
) -> AsyncIterator[Service]:
    logs = tmp_path / "logs"
    logs.mkdir()
    svc = Service(redis_server_url, logs)
    try:
        await svc.start()
        yield svc
    finally:
        await svc.kill()
    assert_json_logs(logs)  # every line the processes printed is a JSON log line


@pytest.fixture
async def api_key(real_redis: Redis) -> str:
    _, key = await TenantRegistry(real_redis, PREFIX).create("acme")
    return key


async def test_the_walkthrough_runs_to_completion(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    env = {
        **os.environ,
        "SESSIONS_URL": service.url,
        "SESSIONS_API_KEY": api_key,
        "EXPORT_DIR": str(export_dir),
    }
    env.pop("SESSIONS_REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = out.decode()
    assert proc.returncode == 0, f"{text}\n{service.output()}"
    assert "We discussed:" in text and "What database should we use?" in text
    assert "Session: persistent-assistant" in text and text.rstrip().endswith("done")
    history = json.loads((export_dir / "conversation.json").read_text())
    assert [m["role"] for m in history[:2]] == ["user", "assistant"]
    assert history[0]["content"] == "Remember my name is Ada"
    async with SessionClient(service.url, api_key=api_key) as client:
        assert await client.list_sessions() == []  # it cleans up after itself


async def test_a_conversation_survives_a_restart_of_api_and_worker(
    service: Service, api_key: str
) -> None:
    prompts = [
        "Let's discuss TypeScript generics",
        "How do constraints work?",
        "And conditional types?",
    ]
    async with SessionClient(service.url, api_key=api_key) as client:
        session = await client.create_session(
            {"sessionId": "user-123-conversation", "model": "dev-echo"}
        )
        await session.send_and_wait({"prompt": prompts[0]})
        await session.send_and_wait({"prompt": prompts[1]})
        await session.send({"prompt": prompts[2]})  # its turn may or may not run before the kill
        await service.kill()
    async with SessionClient(service.url, api_key=api_key, max_retries=0) as client:
        with pytest.raises(ServerError) as down:  # nothing listens now
            await client.get_session_metadata("user-123-conversation")
        assert down.value.status_code is None

    await service.start()
    async with SessionClient(service.url, api_key=api_key) as client:
        resumed = await client.resume_session("user-123-conversation")
        reply = await resumed.send_and_wait({"prompt": "What were we discussing?"}, timeout=60)
        assert reply.finish_reason == "stop"  # the dev model answers whole
        for prompt in prompts:
            assert prompt in reply.data["content"], f"{reply.data}\n{service.output()}"
        messages = await resumed.get_messages()
        # Four answered prompts; the reply to the third comes after the fourth prompt when its
        # turn had not run before the kill (turns are answered in order, each exactly once).
        roles = [m.role for m in messages]
        assert roles.count("user") == roles.count("assistant") == 4
        assert roles[:4] == ["user", "assistant"] * 2 and roles[-1] == "assistant"
        assert [m.content for m in messages if m.role == "user"] == [
            *prompts,
            "What were we discussing?",
        ]


def sync_walkthrough(url: str, api_key: str) -> None:
    """The recipe's calls through the blocking client, and live events on its listener thread."""
    with SyncSessionClient(url, api_key=api_key) as client:
        session = client.create_session({"session_id": "sync-1", "model": "dev-echo"})
        seen: list[str] = []
        idle = threading.Event()

        def on_event(event: Event) -> None:
            seen.append(event.type)
            if event.type == "session.idle":
                idle.set()

        unsubscribe = session.on(on_event)
        reply = session.send_and_wait({"prompt": "Let's plan a web app architecture"})
        assert reply.type == "assistant.message" and "web app" in reply.data["content"]
        assert idle.wait(10), seen
        assert seen[0] == "user.message" and "assistant.message" in seen
        unsubscribe()
        assert not session.listening
        session.destroy()

        resumed = client.resume_session("sync-1")
        again = resumed.send_and_wait("What were we discussing?", timeout=30)
        assert "Let's plan a web app architecture" in again.data["content"]
        assert [m.role for m in resumed.get_messages()] == ["user", "assistant"] * 2
        listed = client.list_sessions()
        assert [i.get("sessionId") for i in listed] == ["sync-1"] and listed[0]["modifiedTime"]
        with pytest.raises(ValidationError):
            client.create_session(session_id="has space")
        with pytest.raises(SessionError) as taken:
            client.create_session(session_id="sync-1")
        assert taken.value.status_code == 409
        client.delete_session("sync-1")
        with pytest.raises(SessionNotFound):
            client.resume_session("sync-1")
        assert client.list_sessions() == []
        stuck = client.create_session(session_id="sync-2", streaming=True)
        with pytest.raises(TimeoutError, match="no reply"):  # (the reply takes seconds)
            stuck.send_and_wait("x" * 10, timeout=0.000001)
        client.delete_session("sync-2")


async def test_the_sync_client_runs_the_recipe(service: Service, api_key: str) -> None:
    await asyncio.to_thread(sync_walkthrough, service.url, api_key)


class FlakyGateway(httpx.AsyncBaseTransport):
    """What an ingress does while pods roll: the first request of each kind chosen gets a 502
    HTML page, later ones reach the real service."""

    def __init__(self, kinds: set[tuple[str, str]]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.kinds = kinds
        self.seen: list[tuple[str, str, int, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = (request.method, "/messages" if path.endswith("/messages") else path)
        key = request.headers.get("idempotency-key")
        if kind in self.kinds:
            self.kinds.discard(kind)
            self.seen.append((request.method, path, 502, key))
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return httpx.Response(502, content=page, headers={"content-type": "text/html"})
        response = await self.inner.handle_async_request(request)
        self.seen.append((request.method, path, response.status_code, key))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_502_is_retried_for_repeatable_calls_only(service: Service, api_key: str) -> None:
    gateway = FlakyGateway(
        {("POST", "/v1/sessions"), ("POST", "/messages"), ("GET", "/v1/sessions")}
    )
    async with SessionClient(service.url, api_key=api_key, transport=gateway) as client:
        with pytest.raises(ServerError) as refused:
            await client.create_session(session_id="gw")  # it may have been made: not repeated
        assert refused.value.status_code == 502
        assert await client.list_sessions() == []  # a 502, then the answer: nothing was made
        session = await client.create_session(session_id="gw")
        reply = await session.send_and_wait({"prompt": "only once please"})
        assert 'You said: "only once please"' in reply.data["content"]
        sends = [s for s in gateway.seen if s[0] == "POST" and s[1].endswith("/messages")]
        assert [s[2] for s in sends] == [502, 202] and sends[0][3] == sends[1][3]
        assert [m.role for m in await session.get_messages()] == ["user", "assistant"]
        await client.delete_session("gw")


STALE_CURSOR = "L1-1"  # a live entry the live window no longer holds


class Collector:
    """An ``on`` handler: the events it is handed, as ``(type, id)``; ``done`` is set once it
    was handed the event it expects."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.until = ""
        self.done = threading.Event()

    def expect(self, event_id: str) -> None:
        self.done.clear()
        self.until = event_id
        if any(i == event_id for _, i in self.events):
            self.done.set()

    def __call__(self, event: Event) -> None:
        self.events.append((event.type, event.id))
        if event.id == self.until:
            self.done.set()

    def messages(self) -> list[tuple[str, str]]:
        return [e for e in self.events if e[0] in ("user.message", "assistant.message")]


def sync_catch_up(url: str, api_key: str) -> Collector:
    """The sync half of the test below."""
    with SyncSessionClient(url, api_key=api_key) as client:
        client.create_session({"session_id": "behind-sync", "model": "dev-echo"})
        handle = client.resume_session("behind-sync")
        handle._cursor = STALE_CURSOR  # it last saw an entry long trimmed from the window
        other = client.resume_session("behind-sync")
        other.send_and_wait("meanwhile")  # missed: the handle does not listen yet
        seen, read = Collector(), handle.get_events

        def during(**kwargs: Any) -> list[Event]:
            if not seen.until:  # a turn after the stream resumed, before the history is read
                seen.expect(other.send_and_wait("during").id)
            return read(**kwargs)

        handle.get_events = during  # type: ignore[method-assign]
        handle.on(seen)
        assert seen.done.wait(10), seen.events
        seen.expect(other.send_and_wait("after").id)  # the stream has handed on all before it
        assert seen.done.wait(10), seen.events
        handle.destroy()
        return seen


async def test_a_listener_past_the_live_window_catches_up_from_the_history(
    service: Service, api_key: str
) -> None:
    """Resuming beyond the live window, the service says ``session.resync``; both clients then
    hand their handlers what the history holds after the newest event they saw, not silence,
    and nothing twice where that history and the resumed stream overlap."""
    async with SessionClient(service.url, api_key=api_key) as client:
        await client.create_session({"session_id": "behind", "model": "dev-echo"})
        handle = await client.resume_session("behind")
        handle._cursor = STALE_CURSOR
        other = await client.resume_session("behind")
        await other.send_and_wait("meanwhile")
        seen, read = Collector(), handle.get_events

        async def during(**kwargs: Any) -> list[Event]:
            if not seen.until:
                seen.expect((await other.send_and_wait("during")).id)
            return await read(**kwargs)

        handle.get_events = during  # type: ignore[method-assign]
        handle.on(seen)
        assert await asyncio.to_thread(seen.done.wait, 10), seen.events
        seen.expect((await other.send_and_wait("after")).id)
        assert await asyncio.to_thread(seen.done.wait, 10), seen.events
        await handle.destroy()
        await other.destroy()
    for collected in (seen, await asyncio.to_thread(sync_catch_up, service.url, api_key)):
        messages = collected.messages()
        assert [t for t, _ in messages] == ["user.message", "assistant.message"] * 3, messages
        assert len({i for _, i in messages}) == 6, messages  # none handed on twice
        assert "session.resync" not in [t for t, _ in collected.events]


class BehindTheWindow(httpx.HTTPTransport):
    """The real transport, except that the first event stream, once the turn it waits on has
    ended, asks from a live id the window no longer holds (as after a long outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.rewritten = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events/stream") and not self.rewritten:
            self.rewritten += 1
            after = request.url.params["after"]
            listing = request.url.copy_with(path=request.url.path.removesuffix("/stream"))
            for _ in range(200):
                page = super().handle_request(
                    httpx.Request("GET", listing, headers=request.headers)
                )
                page.read()
                if any(
                    e["data"].get("reply_to") == after for e in json.loads(page.content)["data"]
                ):
                    break
                threading.Event().wait(0.05)
            request.url = request.url.copy_set_param("after", STALE_CURSOR)
            request.headers["Last-Event-ID"] = STALE_CURSOR
        return super().handle_request(request)


def test_send_and_wait_finds_a_reply_missed_behind_the_live_window(
    service: Service, api_key: str
) -> None:
    """The sync client's wait resumes past the live window after the reply was stored: the
    service says ``session.resync``, and the wait finds the reply in the history."""
    transport = BehindTheWindow()
    with SyncSessionClient(service.url, api_key=api_key, transport=transport) as client:
        session = client.create_session({"session_id": "gap-sync", "model": "dev-echo"})
        reply = session.send_and_wait("anyone there?", timeout=10)
        assert transport.rewritten == 1
        assert reply.type == "assistant.message" and "anyone there?" in reply.data["content"]


def test_a_sync_listener_started_again_goes_on_where_the_last_one_stopped(
    service: Service, api_key: str
) -> None:
    """``test_a_listener_started_again...`` of the async client, for the sync one."""
    seen: list[Event] = []
    idle = threading.Event()

    def on_any(event: Event) -> None:
        seen.append(event)
        if event.type == "session.idle":
            idle.set()

    with SyncSessionClient(service.url, api_key=api_key) as client:
        session = client.create_session({"session_id": "relisten-sync", "model": "dev-echo"})
        for prompt in ("one", "two"):
            idle.clear()
            stop = session.on(on_any)
            session.send(prompt)
            assert idle.wait(10)
            threading.Event().wait(0.2)  # what follows the idle event comes through too
            stop()
    ids = [e.id for e in seen]
    assert len(set(ids)) == len(ids), [(e.type, e.id) for e in seen]
    assert [e.data["content"] for e in seen if e.type == "user.message"] == ["one", "two"]


def without_replies(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The whole SSE frames of ``chunks`` but the replies' (what a lost live copy looks like),
    and what is left of an unfinished frame."""
    *frames, rest = b"".join(chunks).split(b"\n\n")
    kept = [f + b"\n\n" for f in frames if b"event: assistant.message\n" not in f]
    return b"".join(kept), [rest]


class LostReplies(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        rest: list[bytes] = []
        async for chunk in self.inner:
            out, rest = without_replies([*rest, chunk])
            if out:
                yield out

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncLostReplies(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        rest: list[bytes] = []
        for chunk in self.inner:
            out, rest = without_replies([*rest, chunk])
            if out:
                yield out

    def close(self) -> None:
        self.inner.close()


class LosesReplies(httpx.AsyncHTTPTransport):
    """The real transport, but event streams never carry a reply: as when a process dies
    between writing a reply and publishing its live copy (a Redis Cluster writes them apart)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not request.url.path.endswith("/events/stream"):
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        stream = LostReplies(response.stream)
        return httpx.Response(response.status_code, headers=response.headers, stream=stream)


class SyncLosesReplies(httpx.HTTPTransport):
    """``LosesReplies``, blocking."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith("/events/stream"):
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        stream = SyncLostReplies(response.stream)
        return httpx.Response(response.status_code, headers=response.headers, stream=stream)


async def test_a_wait_whose_reply_never_came_live_finds_it_stored(
    service: Service, api_key: str
) -> None:
    """Before it reports a timeout, a wait looks once in the history: a reply whose live copy
    was lost still ends it (late, at the timeout), in both clients."""
    transport = LosesReplies()
    async with SessionClient(service.url, api_key=api_key, transport=transport) as client:
        session = await client.create_session({"session_id": "lost-copy", "model": "dev-echo"})
        reply = await session.send_and_wait("are you there?", timeout=1)
        assert reply.type == "assistant.message" and "are you there?" in reply.data["content"]
        await session.destroy()

    def sync_wait() -> Event:
        with SyncSessionClient(service.url, api_key=api_key, transport=SyncLosesReplies()) as sync:
            return sync.resume_session("lost-copy").send_and_wait("still there?", timeout=1)

    reply = await asyncio.to_thread(sync_wait)
    assert reply.type == "assistant.message" and "still there?" in reply.data["content"]


class SlowFirstSend(httpx.AsyncHTTPTransport):
    """The real transport, except that the answer to the first send comes 1.5 s after the
    service stored the prompt: a slow network, or a proxy holding answers."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/messages") and not self.held:
            self.held += 1
            await response.aread()
            await asyncio.sleep(1.5)
        return response


async def test_a_wait_that_ends_before_its_send_answered_names_the_key_to_send_again(
    service: Service, api_key: str
) -> None:
    """The prompt reached the service, but its answer not the client in time: the timeout
    says so and names the send's Idempotency-Key; a send_and_wait with that key stores nothing
    more and returns the reply (found in the history at once)."""
    async with SessionClient(service.url, api_key=api_key, transport=SlowFirstSend()) as client:
        session = await client.create_session({"session_id": "slow-send", "model": "dev-echo"})
        with pytest.raises(WaitTimeout) as timed_out:
            await session.send_and_wait("did it arrive?", timeout=0.5)
        error = timed_out.value
        assert error.message_id is None and error.idempotency_key in str(error)
        assert "may have been stored" in str(error)
        reply = await session.send_and_wait(
            "did it arrive?", timeout=10, idempotency_key=error.idempotency_key
        )
        assert "did it arrive?" in reply.data["content"]
        assert [m.role for m in await session.get_messages()] == ["user", "assistant"]

    def sync_again() -> list[str]:
        with SyncSessionClient(service.url, api_key=api_key) as sync:
            session = sync.resume_session("slow-send")
            again = session.send_and_wait(
                "did it arrive?", timeout=10, idempotency_key=error.idempotency_key
            )
            assert again.id == reply.id
            return [m.role for m in session.get_messages()]

    assert await asyncio.to_thread(sync_again) == ["user", "assistant"]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "10", True])
async def test_a_wait_it_cannot_keep_is_refused_before_anything_is_sent(
    service: Service, api_key: str, timeout: Any
) -> None:
    async with SessionClient(service.url, api_key=api_key) as client:
        session = await client.create_session({"session_id": "bad-wait", "model": "dev-echo"})
        with pytest.raises(ValidationError, match="timeout must be seconds above 0"):
            await session.send_and_wait("hi", timeout=timeout)

        def sync_wait() -> None:
            with SyncSessionClient(service.url, api_key=api_key) as sync:
                sync.resume_session("bad-wait").send_and_wait("hi", timeout=timeout)

        with pytest.raises(ValidationError, match="timeout must be seconds above 0"):
            await asyncio.to_thread(sync_wait)
        assert await session.get_messages() == []
        await client.delete_session("bad-wait")


async def test_a_call_rides_out_a_restart_of_the_api(service: Service, api_key: str) -> None:
    """With default settings a call made while the API restarts (seconds, as a pod replaced)
    is retried until it answers, within the call's deadline."""
    async with SessionClient(service.url, api_key=api_key) as client:
        await client.create_session({"session_id": "restarted", "model": "dev-echo"})
        await service.kill()

        async def restart() -> None:
            await asyncio.sleep(2)
            await service.start()

        restarting = asyncio.create_task(restart())
        info = await client.get_session_metadata("restarted")
        await restarting
        assert info.session_id == "restarted"
        await client.delete_session("restarted")
