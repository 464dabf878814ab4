"""Domain models shared by the store, the API, the workers and the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypedDict

from pydantic import BaseModel, Field


class EventType(str, Enum):
    SESSION_START = "session.start"
    USER_MESSAGE = "user.message"
    ASSISTANT_TURN_START = "assistant.turn_start"
    ASSISTANT_MESSAGE_DELTA = "assistant.message_delta"
    ASSISTANT_MESSAGE = "assistant.message"
    ASSISTANT_TURN_END = "assistant.turn_end"
    ASSISTANT_USAGE = "assistant.usage"
    SESSION_IDLE = "session.idle"
    SESSION_ERROR = "session.error"
    SESSION_TITLE_CHANGED = "session.title_changed"
    SESSION_COMPACTION_START = "session.compaction_start"
    SESSION_COMPACTION_COMPLETE = "session.compaction_complete"
    ABORT = "abort"
    ITEM = "item"
    ITEM_POPPED = "item.popped"
    ITEMS_CLEARED = "items.cleared"


class SessionMode(str, Enum):
    """``turns``: a prompt queues a turn for the workers. ``store``: storage only, the app runs
    its own model loop and appends items; nothing ever queues a turn."""

    TURNS = "turns"
    STORE = "store"


MESSAGE_ROLES = {
    EventType.USER_MESSAGE.value: "user",
    EventType.ASSISTANT_MESSAGE.value: "assistant",
}


class Event(TypedDict):
    """The assistant-SDK event envelope, as stored and served."""

    id: str
    timestamp: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append (the store assigns its id and time). A plain dataclass: events are
    built by the service itself, never parsed from a request, and one is made per send."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """One message of the conversation. A plain dataclass, and not a frozen one: a history of
    thousands is built per read, and pydantic validation of each was most of a read's cost, a
    frozen dataclass's ``__init__`` still three times a plain one's. Without slots: orjson
    serializes a page of them (``GET /messages``) from ``__dict__``, seven times faster."""

    role: str
    content: str
    id: str
    timestamp: str


def messages_from_events(events: list[Event]) -> list[Message]:
    """The conversation (user and assistant messages, in order) within a list of events."""
    out: list[Message] = []
    for ev in events:
        role = MESSAGE_ROLES.get(ev["type"])
        content: Any = ""
        if role is not None:
            content = ev["data"].get("content", "")
        elif ev["type"] == EventType.ITEM.value and is_message_role(ev["data"].get("role")):
            role, content = ev["data"]["role"], item_text(ev["data"].get("content", ""))
        if role is not None:
            out.append(
                Message(role=role, content=str(content), id=ev["id"], timestamp=ev["timestamp"])
            )
    return out


ITEM_ROLES = frozenset(MESSAGE_ROLES.values())


def is_message_role(role: Any) -> bool:
    """Whether an item's ``role`` makes it a message of the conversation (any JSON value may
    be there: only the strings ``user`` and ``assistant`` do)."""
    return type(role) is str and role in ITEM_ROLES


def item_text(content: Any) -> str:
    """The text of an item's ``content``: a string, or the ``text`` of its parts (the
    Responses-API ``input_text``/``output_text`` shapes)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def datetime_to_ms(moment: datetime) -> int:
    """The Unix time in ms of ``moment`` (exact for a ``ms_to_datetime`` result)."""
    return round(moment.timestamp() * 1000)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class SessionInfo(BaseModel):
    session_id: str
    model: str
    system_message: str = ""
    streaming: bool = False
    summary: str = ""
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    infinite: bool = False
    ttl_seconds: int
    created_at: datetime
    modified_at: datetime
    expires_at: datetime | None
    event_count: int
    message_count: int
    last_event_id: str
    status: str = "idle"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    compacted_through: str = ""
    mode: SessionMode = SessionMode.TURNS
    modified_ms: int = Field(default=0, exclude=True)
    # token calibration (workers/budget.py): prompt tokens the provider reported, and the
    # estimate of the same prompts
    calib_reported: int = Field(default=0, exclude=True)
    calib_estimated: int = Field(default=0, exclude=True)


class SessionPage(BaseModel):
    data: list[SessionInfo]
    next_cursor: str | None


class Bookmark(BaseModel):
    name: str
    description: str = ""
    event_id: str
    message_count: int
    created_at: datetime


class AppendResult(BaseModel):
    event_ids: list[str]
    duplicate: bool = False


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def stored_labels(text: str | None) -> dict[str, str]:
    """A session's labels as stored (JSON). Labels stored before lone surrogates were refused
    may hold one (JSON escapes them, and no UTF-8 text holds them): each reads as U+FFFD, so
    their session can still be listed, shown and exported."""
    labels: dict[str, str] = json.loads(text or "{}")
    if text and "\\u" in text:  # only escaped text can hold one
        labels = {
            _LONE_SURROGATE.sub("\ufffd", k): _LONE_SURROGATE.sub("\ufffd", v)
            for k, v in labels.items()
        }
    return labels


def session_info_from_hash(raw: dict[str, str]) -> SessionInfo:
    """Build the public view of a session from its metadata hash."""
    created = int(raw.get("created", 0))
    modified = int(raw.get("modified", created))
    ttl = int(raw.get("ttl", 0))
    infinite = raw.get("infinite") == "1"
    return SessionInfo(
        session_id=raw["id"],
        model=raw.get("model", ""),
        system_message=raw.get("system_message", ""),
        streaming=raw.get("streaming") == "1",
        summary=raw.get("summary", ""),
        name=raw.get("name", ""),
        labels=stored_labels(raw.get("labels")),
        infinite=infinite,
        ttl_seconds=ttl,
        created_at=ms_to_datetime(created),
        modified_at=ms_to_datetime(modified),
        expires_at=None if infinite else ms_to_datetime(modified + ttl * 1000),
        event_count=int(raw.get("events", 0)),
        message_count=int(raw.get("messages", 0)),
        last_event_id=raw.get("last_event_id", ""),
        status=raw.get("status", "idle"),
        prompt_tokens=int(raw.get("prompt_tokens", 0)),
        completion_tokens=int(raw.get("completion_tokens", 0)),
        compacted_through=raw.get("compacted_through", ""),
        mode=SessionMode(raw.get("mode", SessionMode.TURNS.value)),
        modified_ms=modified,
        calib_reported=int(raw.get("calib_reported", 0)),
        calib_estimated=int(raw.get("calib_estimated", 0)),
    )
