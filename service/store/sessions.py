"""Session metadata: create, read, update, delete."""

from __future__ import annotations

import json
from typing import Any

from service import keys as K
from service.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    PayloadTooLarge,
)
from service.ids import new_session_id, validate_labels
from service.models import (
    EventType,
    NewEvent,
    SessionInfo,
    SessionMode,
    session_info_from_hash,
)
from service.store.base import TenantBase, _missing, encode_event
from service.store.listing import ListingOps
from service.store.repair import RepairOps


class SessionOps(RepairOps, ListingOps, TenantBase):
    """Create, read, update and delete sessions (the metadata hash)."""

    async def create(
        self,
        session_id: str | None = None,
        *,
        model: str,
        system_message: str = "",
        streaming: bool = False,
        infinite: bool = False,
        ttl_seconds: int | None = None,
        labels: dict[str, str] | None = None,
        name: str = "",
        max_sessions: int | None = None,
        mode: SessionMode = SessionMode.TURNS,
    ) -> SessionInfo:
        """Create a session; ``mode=SessionMode.STORE`` makes it storage-only (items, no
        turns, ever)."""
        sid = session_id if session_id is not None else new_session_id()
        self._session_keys(sid)  # validates the id before anything else
        ttl = self._ttl(ttl_seconds)
        limit = self._s.max_sessions if max_sessions is None else max_sessions
        start = encode_event(
            NewEvent(type=EventType.SESSION_START, data={"sessionId": sid, "model": model}),
            self._s.max_event_bytes,
        )
        valid_labels = validate_labels(labels or {})
        # fields at their default ("", 0, {}) are not stored: a session's metadata is paid for
        # every session, and readers take a missing field as its default
        fields: list[str | int] = ["model", model]
        if system_message:
            fields += ["system_message", system_message]
        if streaming:
            fields += ["streaming", 1]
        if SessionMode(mode) is SessionMode.STORE:
            fields += ["mode", SessionMode.STORE.value]
        if name:
            fields += ["name", name]
        if valid_labels:
            fields += ["labels", json.dumps(valid_labels, separators=(",", ":"))]
        if len(system_message.encode()) > self._s.max_event_bytes:
            raise PayloadTooLarge(
                f"system message is over the limit of {self._s.max_event_bytes} bytes"
            )
        if self._s.cluster:
            res = await self._create_seated(sid, limit, [ttl, int(infinite), 0, start, *fields])
        else:
            shards = [
                key
                for shard in range(self._s.index_shards)
                for key in K.index_keys(self._s.prefix, self.tenant_id, shard).pair()
            ]
            args = [ttl, int(infinite), limit, start, *fields]
            res = await self._run("create_session", sid, args, "create a session", shards)
        if res[0] == "conflict":
            raise Conflict(f"session {sid!r} already exists", session_id=sid)
        if res[0] == "limit":
            raise LimitExceeded(
                f"tenant already holds {res[1]} sessions (limit {limit})", limit="sessions"
            )
        if self._s.cluster:
            await self._publish(sid, [("", start)], incarnation=str(res[4]))
        await self._after_write(sid, int(res[1]), int(res[3]), lifecycle="session.created")
        return await self.get(sid)

    async def _create_seated(self, sid: str, limit: int, args: list[str | int]) -> Any:
        """Cluster mode: the session's seat is taken before its create script (the seats are
        one slot, the session another), so concurrent creates stop at the limit exactly; a
        create that does not happen gives its seat back."""
        # an earlier session of this id that expired unswept is announced (and its seat freed)
        # before the id is used again
        await self.sweep_session(sid)
        taken = await self._seat("take", sid, limit=limit)
        if taken == 0:  # seats of sessions expired but not swept yet are freed, once
            await self.reclaim_seats()
            taken = await self._seat("take", sid, limit=limit)
        if taken == 0:
            raise LimitExceeded(
                f"tenant already holds {limit} sessions (limit {limit})", limit="sessions"
            )
        try:
            res = await self._run("create_session", sid, args, "create a session")
        except BaseException:
            if taken == 1:
                await self._seat("release", sid)
            raise
        if res[0] != "ok" and taken == 1:
            await self._seat("release", sid)
        return res

    def _ttl(self, ttl_seconds: int | None) -> int:
        ttl = self._s.default_ttl if ttl_seconds is None else ttl_seconds
        if not isinstance(ttl, int) or ttl < 1 or ttl > 10 * 365 * 24 * 3600:
            raise InvalidInput(f"ttl_seconds must be an integer from 1 to 315360000 (got {ttl!r})")
        return ttl

    async def get(self, session_id: str) -> SessionInfo:
        """The session's metadata; a session of the earlier layout is converted first, so its
        ids and counts are those its history (and an export made next) will show."""
        meta = self._session_keys(session_id).meta
        (raw,) = await self._read_converted(
            session_id, "read a session", lambda pipe: pipe.hgetall(meta)
        )
        if not raw:
            raise _missing(session_id)
        return session_info_from_hash(raw)

    async def get_meta_field(self, session_id: str, field: str) -> str | None:
        """One metadata field (for large fields kept out of ``SessionInfo``)."""
        return (await self.get_meta_fields(session_id, field))[0]

    async def update(
        self,
        session_id: str,
        *,
        name: str | None = None,
        summary: str | None = None,
        labels: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
        infinite: bool | None = None,
        extra: dict[str, str | int] | None = None,
        only_if: dict[str, str] | None = None,
    ) -> SessionInfo:
        """Change the given fields. With ``only_if`` ({field: expected value}, a missing field
        reading as ""), the change is made only if every field still holds its value, checked
        in the same script (``Conflict`` otherwise)."""
        conditions = [item for pair in (only_if or {}).items() for item in pair]
        fields: list[str | int] = []
        if name is not None:
            fields += ["name", name]
        if summary is not None:
            fields += ["summary", summary]
        if labels is not None:
            fields += ["labels", json.dumps(validate_labels(labels), separators=(",", ":"))]
        for key, value in (extra or {}).items():
            fields += [key, value]
        ttl = "" if ttl_seconds is None else self._ttl(ttl_seconds)
        inf = "" if infinite is None else int(infinite)
        args = [ttl, inf, len(conditions) // 2, *conditions, *fields]
        res = await self._run("update_session", session_id, args, "update a session")
        if res[0] == "missing":
            raise _missing(session_id)
        if res[0] == "conflict":
            raise Conflict(f"session {session_id!r} changed meanwhile")
        await self._after_write(session_id, int(res[1]), int(res[2]), lifecycle="session.updated")
        return await self.get(session_id)

    async def delete(self, session_id: str, *, if_modified_ms: int | None = None) -> bool:
        """Remove every key and index entry of the session; ``SessionNotFound`` when absent.

        With ``if_modified_ms`` (cleanup), deletes only if the session's ``modified`` is still that
        value and no turn is pending; returns False and changes nothing otherwise."""
        expected = "" if if_modified_ms is None else str(if_modified_ms)
        outcome = int(await self._run("delete_session", session_id, [expected], "delete a session"))
        if outcome == -1:
            return False
        if outcome == 0:
            raise _missing(session_id)
        await self._after_write(session_id, outcome, -1, remove=True, lifecycle="session.deleted")
        return True
