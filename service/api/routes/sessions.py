"""Sessions of the calling tenant: create, list, read, update, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.api.deps import SettingsDep, StoreDep, TenantDep
from service.api.params import Cursor, LabelFilter, SessionId
from service.api.routes import V1
from service.api.schemas import (
    SessionCreate,
    SessionList,
    SessionListItem,
    SessionPublic,
    SessionUpdate,
)
from service.errors import InvalidInput, PayloadTooLarge
from service.ids import MAX_LABELS
from service.models import SessionMode

router = APIRouter(prefix=f"{V1}/sessions", tags=["sessions"])


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """``["team=a", "env=prod"]`` -> ``{"team": "a", "env": "prod"}``."""
    if len(pairs) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} label filters are allowed (got {len(pairs)})")
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label filter must look like key=value (got {pair[:50]!r})")
        labels[key] = value
    return labels


@router.post("", status_code=201, response_model=SessionPublic)
async def create_session(
    body: SessionCreate, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> SessionPublic:
    """Create a session (409 when the id is taken, 429 over the tenant's session quota, 413
    for a system message over the tenant's message byte limit)."""
    limit = tenant.limits.max_message_bytes or settings.max_message_bytes
    size = len(body.system_message.encode())
    if size > limit:
        raise PayloadTooLarge(
            f"system message of {size} bytes is over the limit of {limit}", limit=limit
        )
    info = await store.create(
        body.session_id,
        model=body.model or tenant.default_model or settings.default_model,
        system_message=body.system_message,
        streaming=body.streaming,
        infinite=body.infinite_sessions,
        ttl_seconds=body.ttl_seconds,
        labels=body.labels,
        name=body.name,
        max_sessions=tenant.limits.max_sessions,
        mode=SessionMode(body.mode),
    )
    return SessionPublic.of(info)


@router.get("", response_model=SessionList)
async def list_sessions(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Cursor = None,
    label: LabelFilter = [],  # noqa: B006
) -> SessionList:
    """Sessions, newest modified first, ``limit`` per page (fewer once the page's text passes
    1 MiB); follow ``next_cursor``. Items leave out the system message."""
    page = await store.list_sessions(limit=limit, cursor=cursor, labels=parse_labels(label))
    items = [SessionListItem.of(i) for i in page.data]
    return SessionList(data=items, next_cursor=page.next_cursor)


@router.get("/{session_id}", response_model=SessionPublic)
async def get_session(session_id: SessionId, store: StoreDep) -> SessionPublic:
    return SessionPublic.of(await store.get(session_id))


@router.patch("/{session_id}", response_model=SessionPublic)
async def update_session(
    session_id: SessionId, body: SessionUpdate, store: StoreDep
) -> SessionPublic:
    """Change name, summary, labels, TTL or the infinite flag; unset fields stay as they are."""
    info = await store.update(
        session_id,
        name=body.name,
        summary=body.summary,
        labels=body.labels,
        ttl_seconds=body.ttl_seconds,
        infinite=body.infinite,
    )
    return SessionPublic.of(info)


@router.delete("/{session_id}", status_code=204, response_class=Response)
async def delete_session(session_id: SessionId, store: StoreDep) -> Response:
    """Delete the session permanently: every key of it is gone."""
    await store.delete(session_id)
    return Response(status_code=204)
