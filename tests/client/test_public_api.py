"""The client's public surface and its pure parts: names, error tree, SSE parsing, models."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis_sessions_client as client_pkg
from redis_sessions_client import (
    AuthenticationError,
    Event,
    Message,
    ProtocolError,
    RateLimited,
    ServerError,
    SessionClient,
    SessionError,
    SessionInfo,
    SessionNotFound,
    SyncSessionClient,
    TurnError,
    ValidationError,
)
from redis_sessions_client._models import id_key, parse_time
from redis_sessions_client._requests import CREATE_KEYS, options
from redis_sessions_client._retry import Attempts, retry_after_seconds
from redis_sessions_client._sse import (
    ServerSentEvent,
    SSEDecoder,
    aiter_sse_lines,
    is_event_stream,
    not_an_event_stream,
)

ADAPTERS = {"agents", "langchain"}  # modules of the optional extras
EXPORTED = {
    "SessionClient",
    "Session",
    "SyncSessionClient",
    "SyncSession",
    "SessionInfo",
    "Message",
    "Event",
    "Bookmark",
    "SessionError",
    "SessionNotFound",
    "ValidationError",
    "AuthenticationError",
    "RateLimited",
    "ServerError",
    "TurnError",
    "ProtocolError",
    "WaitTimeout",
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(client_pkg.__all__) == EXPORTED
    assert len(client_pkg.__all__) == len(EXPORTED)
    public = {n for n in vars(client_pkg) if not n.startswith("_")}
    assert public - ADAPTERS == EXPORTED  # an adapter shows up once a test imported it
    for name in EXPORTED:
        assert getattr(client_pkg, name).__module__ == "redis_sessions_client"


def test_error_tree() -> None:
    for cls in (
        SessionNotFound,
        ValidationError,
        AuthenticationError,
        RateLimited,
        ServerError,
        TurnError,
        ProtocolError,
    ):
        assert issubclass(cls, SessionError)
    assert issubclass(SessionNotFound, RuntimeError)
    assert issubclass(ValidationError, ValueError)
    assert not issubclass(SessionNotFound, ValueError)
    assert ServerError("boom", status_code=502).status_code == 502
    assert issubclass(client_pkg.WaitTimeout, TimeoutError)


def feed(lines: list[str]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [e for line in lines if (e := decoder.feed(line)) is not None]


def test_sse_framing() -> None:
    events = feed(
        [
            "retry: 2000",
            "",
            ": keepalive",
            "",
            "id: 1-0",
            "event: user.message",
            'data: {"a":',
            "data:1}",
            "",
            "event: session.deleted",
            "data: {}",
            "",
            "data: plain",
            "",
        ]
    )
    assert [(e.event, e.data, e.id) for e in events] == [
        ("user.message", '{"a":\n1}', "1-0"),
        ("session.deleted", "{}", "1-0"),  # the last event id carries over, per the spec
        ("message", "plain", "1-0"),
    ]


async def test_sse_lines_strip_line_breaks_and_drop_a_cut_event() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in ["id: 5-1\r\n", "event: x\r\n", "data: y\r\n", "\r\n", "data: cut"]:
            yield line

    got = [e async for e in aiter_sse_lines(lines())]
    assert got == [ServerSentEvent(event="x", data="y", id="5-1")]


def test_event_ids_order_numerically() -> None:
    assert id_key("1700000000000-10") > id_key("1700000000000-9")
    assert id_key("1700000000001-0") > id_key("1700000000000-99")


RAW_INFO = {
    "session_id": "user-1-main",
    "model": "dev-echo",
    "system_message": "",
    "streaming": False,
    "summary": "Planning",
    "name": "",
    "labels": {"team": "a"},
    "infinite": False,
    "ttl_seconds": 3600,
    "created_at": "2024-11-22T03:28:09.878000Z",
    "modified_at": "2024-11-22T03:30:00+00:00",
    "expires_at": "2024-11-22T04:30:00Z",
    "event_count": 4,
    "message_count": 2,
    "last_event_id": "1732246200000-0",
    "status": "idle",
    "prompt_tokens": 10,
    "completion_tokens": 20,
}


def test_the_clients_know_the_services_transient_types() -> None:
    """Which events are kept only in the live window: the clients track the newest durable
    event a handle saw (to catch up after a resync) by it."""
    from redis_sessions_client._sse import TRANSIENT_TYPES as PYTHON_CLIENT

    from service.events import TRANSIENT_TYPES

    source = (CLIENT_ROOT.parent / "typescript" / "src" / "session.ts").read_text()
    block = source[source.index("const TRANSIENT_TYPES") :]
    typescript = set(re.findall(r'"([a-z_.]+)"', block[: block.index("]);")]))
    assert PYTHON_CLIENT == TRANSIENT_TYPES == typescript


async def test_durable_events_out_of_id_order_are_all_handed_on() -> None:
    """On a Cluster a durable event's live copy is published after its script, so two writers
    can put history ids on the stream out of order: neither is dropped, and a reply that is
    overtaken by the next prompt still ends its send_and_wait."""
    from redis_sessions_client._session import Session

    info = SessionInfo.from_json({**RAW_INFO, "last_event_id": "100-1"})
    session = Session(SessionClient("http://127.0.0.1:1"), info)
    handed: list[str] = []
    session._handlers.append((None, lambda e: handed.append(e.id)))  # no listener: no server
    waiter = asyncio.get_running_loop().create_future()
    session._waiters["100-1"] = waiter
    now = datetime.now(UTC)
    await session._handle(Event("100-3", "user.message", {"content": "next"}, now))
    reply = Event("100-2", "assistant.message", {"content": "hi", "reply_to": "100-1"}, now)
    await session._handle(reply)
    # the newest copy again (a copy published after a connect that began after its write)
    await session._handle(Event("100-3", "user.message", {"content": "next"}, now))
    assert handed == ["100-3", "100-2"]
    assert waiter.done() and waiter.result() == reply
    # the final notice has no SSE id of its own: it carries the last one, and is not a copy
    await session._handle(Event("100-3", "session.expired", {"session_id": "s"}, now))
    assert handed == ["100-3", "100-2", "100-3"]


def test_session_info_attributes_and_camel_case_mapping() -> None:
    info = SessionInfo.from_json(RAW_INFO)
    assert info.session_id == "user-1-main"
    assert info.start_time == datetime(2024, 11, 22, 3, 28, 9, 878000, tzinfo=UTC)
    assert info.modified_time.tzinfo is not None
    assert info.message_count == 2 and info.labels == {"team": "a"} and not info.infinite
    assert info["sessionId"] == "user-1-main"
    assert info.get("sessionId", "unknown") == "user-1-main"
    assert info["startTime"] == "2024-11-22T03:28:09.878000Z"
    assert info.get("modifiedTime", "N/A") == "2024-11-22T03:30:00+00:00"
    assert info.get("summary", "No summary") == "Planning"
    assert info["session_id"] == "user-1-main"  # the service's own field names work too
    assert info.get("isRemote", False) is False
    with pytest.raises(KeyError):
        info["nope"]
    assert "sessionId" in info and "sessionId" in dict(info)
    assert info.mode == "turns"  # what a session without a mode of its own runs
    untitled = SessionInfo.from_json({**RAW_INFO, "summary": "", "mode": "store"})
    assert untitled.summary == "" and untitled.mode == "store" and untitled["mode"] == "store"
    assert untitled.get("summary", "No summary") == "No summary"  # as TypeScript's omits it
    assert "summary" not in untitled and "summary" not in dict(untitled)


def test_event_and_message_models() -> None:
    ev = Event.from_json(
        {"id": "1-0", "timestamp": "2024-11-22T03:28:09Z", "type": "x", "data": {"k": 1}}
    )
    assert ev.data == {"k": 1} and ev.timestamp.year == 2024
    assert ev.to_dict()["type"] == "x"
    msg = Message.from_json(
        {"role": "assistant", "content": "hi", "id": "2-0", "timestamp": "2024-11-22T03:28:09Z"}
    )
    assert (msg.type, msg.data) == ("assistant.message", {"content": "hi"})


def test_from_json_builds_what_the_dataclass_itself_would() -> None:
    """``list_from_json`` (a page) and ``from_json`` fill a message's slots without its
    ``__init__`` (for speed): the result must be the message ``__init__`` builds, as equal,
    hashable and frozen; a subclass's are built by its own ``__init__``."""
    raws = [
        {"role": "user", "content": "hi", "id": "1-0", "timestamp": "2024-11-22T03:28:09.5Z"},
        {"role": "assistant", "id": "1-1", "timestamp": "2024-11-22T03:28:09"},  # naive
        {"role": "user", "content": 7, "id": "1-2", "timestamp": "2024-11-22T04:28:09+01:00"},
        {"role": "user", "content": "", "id": "1-3", "timestamp": datetime(2024, 1, 1)},
    ]
    page = Message.list_from_json(raws)
    assert [Message.from_json(raw) for raw in raws] == page
    built = [
        Message(
            role=raw["role"],
            content=str(raw.get("content", "")),
            id=raw["id"],
            timestamp=parse_time(raw["timestamp"]),
        )
        for raw in raws
    ]
    assert page == built and [hash(m) for m in page] == [hash(m) for m in built]
    assert all(m.timestamp.tzinfo is not None for m in page) and page[2].content == "7"
    with pytest.raises(dataclasses.FrozenInstanceError):
        page[0].content = "changed"  # type: ignore[misc]

    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(Message):
        tag: str = "t"

    tagged = Tagged.list_from_json(raws)
    assert [type(m) for m in tagged] == [Tagged] * 4 and [m.tag for m in tagged] == ["t"] * 4
    assert [m.to_dict() for m in tagged] == [m.to_dict() for m in page]


def test_options_accept_dicts_keywords_and_camel_case() -> None:
    body = options(
        {"sessionId": "s1", "systemMessage": {"mode": "append", "content": "Be brief"}},
        {"infiniteSessions": True, "model": "m", "name": None},
        CREATE_KEYS,
        "session",
    )
    assert body == {
        "session_id": "s1",
        "system_message": "Be brief",
        "infinite_sessions": True,
        "model": "m",
    }
    with pytest.raises(ValidationError, match="unknown session option 'tools'"):
        options({"tools": []}, {}, CREATE_KEYS, "session")


CLIENT_ROOT = Path(__file__).resolve().parents[2] / "clients" / "python"


def test_the_client_is_its_own_distribution_depending_on_httpx_only() -> None:
    project = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "redis-sessions-client"
    assert [d.split(">")[0].split("=")[0] for d in project["dependencies"]] == ["httpx"]
    assert (CLIENT_ROOT / "redis_sessions_client" / "py.typed").is_file()
    assert Path(client_pkg.__file__).parent == CLIENT_ROOT / "redis_sessions_client"


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    code = (
        "import sys, redis_sessions_client\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'service', 'workers', 'fastapi', 'redis', 'arq', 'pydantic'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "-1"}) == 0.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    now = datetime(2024, 11, 22, 3, 28, 0, tzinfo=UTC).timestamp()
    date = "Fri, 22 Nov 2024 03:28:05 GMT"
    assert retry_after_seconds({"retry-after": date}, now=now) == 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_attempts_retry_what_may_be_repeated_until_the_deadline() -> None:
    clock = Clock()
    sent = Attempts(repeatable=False, max_retries=5, deadline=10, clock=clock)
    assert sent.after_status(502, {}) is None  # a create may have been done
    assert sent.after_error(httpx.ReadError("reset")) is None
    assert sent.after_error(httpx.ConnectError("refused")) is not None  # never left
    assert sent.after_status(429, {"retry-after": "1"}) == 1.0  # refused before anything

    get = Attempts(repeatable=True, max_retries=5, deadline=10, clock=clock)
    for status in (502, 503, 504):
        assert get.after_status(status, {}) is not None
    assert get.after_status(500, {}) is None and get.after_status(404, {}) is None
    assert get.after_status(503, {"retry-after": "9"}) == 9.0
    clock.now += 5
    assert get.after_status(503, {"retry-after": "6"}) is None  # would end past the deadline
    assert get.timeout(30) == 5.0
    # a try whose timeout the deadline cut: its timeout stands for the answer before it, when
    # the call is repeatable or the try never left
    timed_out = httpx.ReadTimeout("no answer")
    assert get.cut and get.cut_short(timed_out) and not get.cut_short(httpx.ReadError("reset"))
    assert not sent.cut_short(timed_out)  # its timeout was not cut
    sent.timeout(30)
    assert sent.cut and not sent.cut_short(timed_out)  # a create may have been done
    assert sent.cut_short(httpx.ConnectTimeout("no connection"))
    clock.now += 5
    assert get.remaining() == 0 and get.after_status(503, {"retry-after": "0"}) is None

    bounded = Attempts(repeatable=True, max_retries=2, deadline=None, clock=clock)
    assert [bounded.after_status(503, {"retry-after": "0"}) for _ in range(3)] == [0, 0, None]
    assert bounded.remaining() is None and bounded.timeout(30) == 30


def test_a_success_that_is_not_an_event_stream_is_a_protocol_error() -> None:
    request = httpx.Request("GET", "http://sessions.test/v1/sessions/s/events/stream")
    html = httpx.Response(200, headers={"content-type": "text/html"}, request=request)
    sse = httpx.Response(
        200, headers={"content-type": "text/event-stream; charset=utf-8"}, request=request
    )
    assert is_event_stream(sse) and not is_event_stream(html)
    error = not_an_event_stream(html, b"<html><body>Sign in</body></html>")
    assert isinstance(error, ProtocolError) and error.status_code == 200
    assert "text/html" in str(error) and "Sign in" in str(error)


def test_base_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONS_URL", "http://sessions.example:9000/")
    monkeypatch.setenv("SESSIONS_API_KEY", "sk_env")
    for client in (SessionClient(), SyncSessionClient()):
        assert (client.base_url, client.api_key) == ("http://sessions.example:9000", "sk_env")
    given = SyncSessionClient("http://other:1", api_key="sk_given")
    assert (given.base_url, given.api_key) == ("http://other:1", "sk_given")
    monkeypatch.delenv("SESSIONS_URL")
    assert SessionClient().base_url == "http://127.0.0.1:8000"


def test_framework_adapters_are_imported_only_when_asked_for() -> None:
    code = (
        "import sys, redis_sessions_client; "
        "assert not {'agents', 'langchain_core'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
