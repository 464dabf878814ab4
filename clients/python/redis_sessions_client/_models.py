"""What the client returns: events, messages, bookmarks and session metadata.

Timestamps are timezone-aware ``datetime`` attributes. ``SessionInfo`` is also a read-only mapping
in the camelCase shape that assistant-SDK code expects (``info.get("sessionId")``,
``info["modifiedTime"]``), whose values are JSON values (times as ISO-8601 strings).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis_sessions_client._errors import TurnError

_ROLE_EVENT = {"user": "user.message", "assistant": "assistant.message"}


def parse_time(value: Any) -> datetime:
    """An ISO-8601 timestamp (``Z`` or an offset) as an aware datetime; naive values are UTC."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a session: ``id``, ``type``, ``data`` and ``timestamp``. A durable event's
    id is its place in the history (``<ms>-<n>``), a transient one's its live cursor
    (``L<ms>-<n>``): no two events of a session share one."""

    id: str
    type: str
    data: dict[str, Any]
    timestamp: datetime

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Event:
        return cls(
            id=str(raw["id"]),
            type=str(raw["type"]),
            data=dict(raw.get("data") or {}),
            timestamp=parse_time(raw["timestamp"]),
        )

    @property
    def finish_reason(self) -> str | None:
        """Why the model stopped, on an ``assistant.message``: ``stop`` (a whole answer),
        ``length`` (cut off at the token limit), ``content_filter`` (withheld by the provider's
        filter), or another word of the provider's; None where the provider said nothing."""
        value = self.data.get("finish_reason")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": self.timestamp.isoformat(),
            "type": self.type,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation: ``role`` is ``"user"`` or ``"assistant"``."""

    role: str
    content: str
    id: str
    timestamp: datetime

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Message:
        return cls.list_from_json([raw])[0]

    @classmethod
    def list_from_json(cls, rows: list[Mapping[str, Any]]) -> list[Message]:
        """The messages of a page's ``data``. A frozen dataclass's ``__init__`` sets each field
        through ``object.__setattr__``, and a page of 1,000 messages cost more to build than to
        fetch: here the slots are filled directly, in one loop."""
        if cls is not Message:  # a subclass gets its own __init__
            return [
                cls(
                    role=str(raw["role"]),
                    content=str(raw.get("content", "")),
                    id=str(raw["id"]),
                    timestamp=parse_time(raw["timestamp"]),
                )
                for raw in rows
            ]
        out: list[Message] = []
        append, new, fromiso = out.append, object.__new__, datetime.fromisoformat
        set_role, set_content, set_id, set_time = _SET_ROLE, _SET_CONTENT, _SET_ID, _SET_TIMESTAMP
        for raw in rows:
            role, content, id_ = raw["role"], raw.get("content", ""), raw["id"]
            stamp = raw["timestamp"]
            timestamp = fromiso(stamp) if type(stamp) is str else parse_time(stamp)
            if timestamp.tzinfo is None:
                timestamp = timestamp.replace(tzinfo=UTC)
            message = new(cls)
            set_role(message, role if type(role) is str else str(role))
            set_content(message, content if type(content) is str else str(content))
            set_id(message, id_ if type(id_) is str else str(id_))
            set_time(message, timestamp)
            append(message)
        return out

    @property
    def type(self) -> str:
        """The event type this message was recorded as (``user.message``, ...)."""
        return _ROLE_EVENT.get(self.role, self.role)

    @property
    def data(self) -> dict[str, Any]:
        return {"content": self.content}

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "content": self.content,
            "id": self.id,
            "timestamp": self.timestamp.isoformat(),
        }


_SET_ROLE, _SET_CONTENT, _SET_ID, _SET_TIMESTAMP = (
    getattr(Message, name).__set__ for name in ("role", "content", "id", "timestamp")
)


@dataclass(frozen=True, slots=True)
class Bookmark:
    """A named position in a session: the last event when it was set."""

    name: str
    description: str
    event_id: str
    message_count: int
    created_at: datetime

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Bookmark:
        return cls(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            event_id=str(raw["event_id"]),
            message_count=int(raw.get("message_count", 0)),
            created_at=parse_time(raw["created_at"]),
        )


# camelCase key of the mapping view -> field of the service's JSON.
_CAMEL = {
    "sessionId": "session_id",
    "startTime": "created_at",
    "modifiedTime": "modified_at",
    "expiresAt": "expires_at",
    "summary": "summary",
    "name": "name",
    "model": "model",
    "labels": "labels",
    "infinite": "infinite",
    "status": "status",
    "messageCount": "message_count",
    "eventCount": "event_count",
    "lastEventId": "last_event_id",
    "systemMessage": "system_message",
    "streaming": "streaming",
    "ttlSeconds": "ttl_seconds",
    "promptTokens": "prompt_tokens",
    "completionTokens": "completion_tokens",
    "mode": "mode",
}


@dataclass(frozen=True, eq=False)
class SessionInfo(Mapping[str, Any]):
    """Metadata of one session, as listed or fetched.

    Attributes use Python names (``start_time`` is the creation time); item access and ``get`` use
    the camelCase keys (``sessionId``, ``startTime``, ``modifiedTime``, ``summary``, ...) or the
    service's own snake_case fields, and return JSON values. An empty ``summary`` (a session not
    titled yet) is not a key, as in the TypeScript client: ``info.get("summary", "No summary")``
    falls back; the attribute is ``""``. ``mode`` is ``"turns"`` (the service's workers answer
    each prompt) or ``"store"`` (the app runs its own model loop).
    """

    session_id: str
    model: str
    start_time: datetime
    modified_time: datetime
    expires_at: datetime | None
    summary: str = ""
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    infinite: bool = False
    ttl_seconds: int = 0
    system_message: str = ""
    streaming: bool = False
    status: str = "idle"
    message_count: int = 0
    event_count: int = 0
    last_event_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    mode: str = "turns"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SessionInfo:
        expires = raw.get("expires_at")
        return cls(
            session_id=str(raw["session_id"]),
            model=str(raw.get("model", "")),
            start_time=parse_time(raw["created_at"]),
            modified_time=parse_time(raw["modified_at"]),
            expires_at=None if expires is None else parse_time(expires),
            summary=str(raw.get("summary") or ""),
            name=str(raw.get("name") or ""),
            labels=dict(raw.get("labels") or {}),
            infinite=bool(raw.get("infinite", False)),
            ttl_seconds=int(raw.get("ttl_seconds") or 0),
            system_message=str(raw.get("system_message") or ""),
            streaming=bool(raw.get("streaming", False)),
            status=str(raw.get("status") or "idle"),
            message_count=int(raw.get("message_count") or 0),
            event_count=int(raw.get("event_count") or 0),
            last_event_id=str(raw.get("last_event_id") or ""),
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            mode=str(raw.get("mode") or "turns"),
            raw=dict(raw),
        )

    @property
    def created_at(self) -> datetime:
        return self.start_time

    @property
    def modified_at(self) -> datetime:
        return self.modified_time

    def __getitem__(self, key: str) -> Any:
        name = _CAMEL.get(key, key)
        if not self._has(name):
            raise KeyError(key)
        return self.raw[name]

    def __iter__(self) -> Iterator[str]:
        return (camel for camel, name in _CAMEL.items() if self._has(name))

    def _has(self, name: str) -> bool:
        return name in self.raw and (name != "summary" or bool(self.raw[name]))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to_dict(self) -> dict[str, Any]:
        """The service's JSON for this session (snake_case fields)."""
        return dict(self.raw)


TURN_ENDS = frozenset({"assistant.message", "session.error", "abort"})


def answers(event: Event, message_id: str) -> bool:
    """Whether ``event`` ends the turn of the user message ``message_id``: its reply or error
    (``reply_to``), or an abort stored after it."""
    if event.type in ("assistant.message", "session.error"):
        return event.data.get("reply_to") == message_id
    return event.type == "abort" and id_key(event.id) > id_key(message_id)


def outcome_in(page: Any, message_id: str) -> Event | None:
    """The event of a page of stored events (``{"data": [...]}``) that ends the turn of
    ``message_id``, if it holds one."""
    events = [Event.from_json(raw) for raw in page["data"]]
    return next((e for e in events if answers(e, message_id)), None)


def turn_outcome(message_id: str, event: Event) -> Event:
    """The reply ``event`` of the turn of ``message_id``, or the ``TurnError`` it stands for."""
    if event.type == "assistant.message":
        return event
    if event.type == "session.error":
        detail = event.data.get("message") or event.data.get("errorType") or "error"
        raise TurnError(f"the turn of message {message_id} failed: {detail}", event=event)
    raise TurnError(f"the turn of message {message_id} was aborted", event=event)


def is_later(position: str, than: str) -> bool:
    """Whether the stream position ``position`` comes after ``than``. Two live positions
    (``L<ms>-<n>``: one live stream) or two history ids compare exactly; across the two only
    the clock tells: a history id is later from the next millisecond, a live position from the
    same one (an entry of that millisecond before the history event's copy brings the copy
    again, which a listener drops as seen)."""
    live, live_than = position.startswith("L"), than.startswith("L")
    key, key_than = id_key(position.removeprefix("L")), id_key(than.removeprefix("L"))
    if live == live_than:
        return key > key_than
    return key[0] >= key_than[0] if live else key[0] > key_than[0]


def id_key(event_id: str) -> tuple[int, int]:
    """Order of an event id (``<ms>-<seq>``)."""
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)
