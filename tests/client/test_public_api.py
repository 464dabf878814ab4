"""The client's public surface and its pure parts: names, error tree, SSE parsing, models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

import service.client as client_pkg
from service.client import (
    AuthenticationError,
    Event,
    Message,
    RateLimited,
    ServerError,
    SessionError,
    SessionInfo,
    SessionNotFound,
    TurnError,
    ValidationError,
)
from service.client._client import _CREATE_KEYS, _options
from service.client._sse import ServerSentEvent, SSEDecoder, aiter_sse_lines, id_key

EXPORTED = {
    "SessionClient",
    "Session",
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
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(client_pkg.__all__) == EXPORTED
    assert len(client_pkg.__all__) == len(EXPORTED)
    public = {n for n in vars(client_pkg) if not n.startswith("_")}
    assert public == EXPORTED
    for name in EXPORTED:
        assert getattr(client_pkg, name).__module__ == "service.client"


def test_error_tree() -> None:
    for cls in (
        SessionNotFound,
        ValidationError,
        AuthenticationError,
        RateLimited,
        ServerError,
        TurnError,
    ):
        assert issubclass(cls, SessionError)
    assert issubclass(SessionNotFound, RuntimeError)
    assert issubclass(ValidationError, ValueError)
    assert not issubclass(SessionNotFound, ValueError)
    assert ServerError("boom", status_code=502).status_code == 502


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


def test_options_accept_dicts_keywords_and_camel_case() -> None:
    body = _options(
        {"sessionId": "s1", "systemMessage": {"mode": "append", "content": "Be brief"}},
        {"infiniteSessions": True, "model": "m", "name": None},
        _CREATE_KEYS,
        "session",
    )
    assert body == {
        "session_id": "s1",
        "system_message": "Be brief",
        "infinite_sessions": True,
        "model": "m",
    }
    with pytest.raises(ValidationError, match="unknown session option 'tools'"):
        _options({"tools": []}, {}, _CREATE_KEYS, "session")
