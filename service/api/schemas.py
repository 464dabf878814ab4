"""Request and response bodies of the HTTP API.

Request bodies are strict, as their schema says: unknown fields, and values of another JSON type
(``{"infinite": 0}``, ``{"ttl_seconds": "60"}``), are a 422. An integer field takes any JSON
number without a fraction (``60.0`` is the integer 60 in JSON Schema, too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from service import ids
from service.lifecycle import LifecycleEvent
from service.models import Bookmark, Message, SessionInfo, SessionMode
from service.tenants import ContextWindows, Limits, ModelName, Retention, Tenant, WindowTokens

MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float) and value.is_integer() and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is int or int in get_args(annotation):
                return int(value)
        return value


LABELS_SCHEMA: dict[str, Any] = {
    "maxProperties": ids.MAX_LABELS,
    "propertyNames": {"pattern": ids.LABEL_KEY_PATTERN},
    "additionalProperties": {"type": "string", "maxLength": ids.LABEL_VALUE_MAX},
}
LABELS_RULE = (
    f"At most {ids.MAX_LABELS}; keys 1-63 of A-Z a-z 0-9 . _ / - starting with a letter or "
    f"digit, values at most {ids.LABEL_VALUE_MAX} characters."
)


# --- sessions ---------------------------------------------------------------------------------
class SessionCreate(RequestBody):
    session_id: str | None = Field(
        default=None,
        description="1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit; generated "
        "when absent.",
        json_schema_extra={"pattern": ids.SESSION_ID_PATTERN, "maxLength": ids.SESSION_ID_MAX},
    )
    model: str | None = Field(default=None, max_length=200, description="Default from settings.")
    system_message: str = Field(default="", description="At most the message byte limit (413).")
    streaming: bool = False
    infinite_sessions: bool = Field(default=False, description="No TTL on any key, ever.")
    ttl_seconds: int | None = Field(
        default=None, ge=1, le=MAX_TTL_SECONDS, description="Sliding TTL of the session."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description=LABELS_RULE, json_schema_extra=LABELS_SCHEMA
    )
    name: str = Field(default="", max_length=200)
    mode: Literal["turns", "store"] = Field(
        default="turns",
        description="`turns`: a prompt queues a turn. `store`: storage only; the app appends "
        "items and no turn ever runs.",
    )


class SessionUpdate(RequestBody):
    name: str | None = Field(default=None, max_length=200)
    summary: str | None = Field(default=None, max_length=10_000)
    labels: dict[str, str] | None = Field(
        default=None, description=LABELS_RULE, json_schema_extra=LABELS_SCHEMA
    )
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_TTL_SECONDS)
    infinite: bool | None = None


class SessionListItem(BaseModel):
    """A session as a list page shows it: everything but the system message (up to the
    message byte limit each; read it with GET /v1/sessions/{id})."""

    session_id: str
    model: str
    streaming: bool
    summary: str
    name: str
    labels: dict[str, str]
    infinite: bool
    ttl_seconds: int
    created_at: datetime
    modified_at: datetime
    expires_at: datetime | None
    event_count: int
    message_count: int
    last_event_id: str
    status: str
    prompt_tokens: int
    completion_tokens: int
    mode: SessionMode

    @classmethod
    def of(cls, info: SessionInfo) -> SessionListItem:
        return cls.model_validate(info.model_dump(exclude={"compacted_through", "system_message"}))


class SessionPublic(SessionListItem):
    system_message: str

    @classmethod
    def of(cls, info: SessionInfo) -> SessionPublic:
        return cls.model_validate(info.model_dump(exclude={"compacted_through"}))


class SessionList(BaseModel):
    data: list[SessionListItem] = Field(
        description="At most `limit` sessions; fewer when their text passes 1 MiB (follow "
        "`next_cursor`)."
    )
    next_cursor: str | None


# --- messages and events ----------------------------------------------------------------------
class SendMessage(RequestBody):
    prompt: str = Field(
        min_length=1,
        description="The user's message; over the tenant's byte limit it is refused (413).",
    )


class SendAccepted(BaseModel):
    message_id: str = Field(description="Event id of the stored user.message.")
    duplicate: bool = Field(description="True when the Idempotency-Key was seen before.")


class AbortResult(BaseModel):
    aborted: bool


class MessageList(BaseModel):
    data: list[Message]
    next_cursor: str | None = Field(
        default=None, description="Pass as `after` for the next page; null at the end."
    )


class EventOut(BaseModel):
    id: str
    timestamp: str
    type: str
    data: dict[str, Any]


class EventList(BaseModel):
    data: list[EventOut]


# --- items of storage-only sessions ----------------------------------------------------------
Item = dict[str, Any]


class ItemsAppend(RequestBody):
    items: list[Item] = Field(
        min_length=1,
        max_length=1000,
        description="JSON objects of any role and kind (Responses-API messages, function calls, "
        "tool outputs, reasoning items...), stored and returned unchanged.",
    )


class ItemsAppended(BaseModel):
    ids: list[str] = Field(
        description="Ids of the stored items, in order; the first item's only on a duplicate."
    )
    duplicate: bool = Field(description="True when the Idempotency-Key was seen before.")


class ItemList(BaseModel):
    data: list[Item] = Field(description="Items, oldest first, as appended.")
    ids: list[str] = Field(description="Their ids, in the same order.")


class ItemPopped(BaseModel):
    id: str | None = Field(description="Id of the removed item; null when there was none.")
    item: Item | None


class ItemsCleared(BaseModel):
    removed: int = Field(description="Number of items removed.")


# --- bookmarks and export ---------------------------------------------------------------------
class BookmarkSet(RequestBody):
    description: str = Field(default="", max_length=1000)


class BookmarkList(BaseModel):
    data: list[Bookmark]


class SessionExport(BaseModel):
    session: SessionPublic
    bookmarks: list[Bookmark]
    events: list[EventOut]


# --- tenants ----------------------------------------------------------------------------------
class TenantPublic(BaseModel):
    id: str
    name: str
    created_at_ms: int
    disabled: bool
    key_hint: str = Field(description="Last characters of the current key, to tell keys apart.")
    limits: Limits
    retention: Retention
    default_model: str | None
    context_windows: dict[str, int]

    @classmethod
    def of(cls, tenant: Tenant) -> TenantPublic:
        return cls.model_validate(tenant.model_dump())


class TenantList(BaseModel):
    data: list[TenantPublic]


class LimitsIn(RequestBody, Limits):
    pass


class RetentionIn(RequestBody, Retention):
    pass


def _integral_windows(value: Any) -> Any:
    """``{"gpt-4o": 128000.0}`` as ``{"gpt-4o": 128000}``: a number without a fraction is an
    integer here too, as in every other integer field."""
    if isinstance(value, dict):
        return {
            k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in value.items()
        }
    return value


class TenantCreate(RequestBody):
    id: str = Field(
        description="1-40 of a-z 0-9 - starting with a letter or digit.",
        json_schema_extra={"pattern": ids.TENANT_ID_PATTERN, "maxLength": ids.TENANT_ID_MAX},
    )
    name: str | None = Field(default=None, max_length=200)
    limits: LimitsIn | None = None
    retention: RetentionIn | None = None
    default_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Model of sessions created "
        "without one (else the deployment's SESSIONS_DEFAULT_MODEL).",
    )
    context_windows: ContextWindows | None = Field(
        default=None,
        description="Context window (tokens) per model or model-name prefix, over the "
        "deployment's SESSIONS_MODEL_CONTEXT_WINDOWS.",
    )

    _windows = field_validator("context_windows", mode="before")(_integral_windows)


class TenantUpdate(RequestBody):
    name: str | None = Field(default=None, max_length=200)
    disabled: bool | None = None
    limits: LimitsIn | None = Field(default=None, description="Merged into the current limits.")
    retention: RetentionIn | None = Field(
        default=None, description="Merged into the current retention rules."
    )
    default_model: str | None = Field(default=None, min_length=1, max_length=200)
    context_windows: (
        Annotated[dict[ModelName, WindowTokens | None], Field(max_length=100)] | None
    ) = Field(
        default=None,
        description="Merged into the current context windows; an entry set to null is removed.",
    )

    _windows = field_validator("context_windows", mode="before")(_integral_windows)


class TenantWithKey(BaseModel):
    tenant: TenantPublic
    api_key: str = Field(description="Shown once; only its digest is stored.")


class LifecycleList(BaseModel):
    data: list[LifecycleEvent]


# --- ops --------------------------------------------------------------------------------------
class Health(BaseModel):
    status: str
