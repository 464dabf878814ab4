"""A session's events: appends (with the turn guards) and paged reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from service import keys as K
from service.connections import store_errors
from service.errors import (
    InvalidInput,
    LimitExceeded,
    StorageOnly,
)
from service.events import (
    TRANSIENT_TYPES,
    decode_history,
    history_id,
    messages_from_history,
    render_history,
    render_history_reversed,
)
from service.models import (
    MESSAGE_ROLES,
    AppendResult,
    Event,
    Message,
    NewEvent,
)
from service.pending import Registered
from service.store.base import (
    EXPORT_PAGE,
    MAX_PAGE,
    TenantBase,
    _event_id,
    _missing,
    encode_event,
)

MAX_ORDINAL = 2**53  # beyond any history (and exact in Lua's numbers)


@dataclass(frozen=True, slots=True)
class TurnState:
    """A session's turns as the watchdog sees them."""

    exists: bool
    pending: int
    oldest: str
    lease_live: bool
    lease_expiry_ms: int  # server ms the lease expires (or expired) at; 0: no lease


class HistoryOps(TenantBase):
    """Appending events (one script per append) and reading them back page by page."""

    async def append(
        self,
        session_id: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        enqueue_turn: bool = False,
    ) -> AppendResult:
        """Append events atomically, in one round trip; with ``enqueue_turn`` the first event
        (a user message) becomes the newest pending turn."""
        res = await self._append(
            session_id, events, idempotency_key, "enqueue" if enqueue_turn else "none", ""
        )
        if res is None:  # pragma: no cover - only 'complete' and 'abort' can be stale
            raise InvalidInput("append was refused")
        return res

    async def guarded_append(
        self, session_id: str, turn_id: str, events: Sequence[NewEvent], *, lease: str = ""
    ) -> AppendResult | None:
        """Append only while ``turn_id`` is the oldest pending turn (a running turn's progress)
        and, when given, the ``lease`` token holds the session's lease; None once either is
        not so (aborted, completed by another try, or the lease was taken over)."""
        return await self._append(session_id, events, None, "guard", turn_id, lease=lease)

    async def complete_turn(
        self,
        session_id: str,
        turn_id: str,
        events: Sequence[NewEvent],
        counters: dict[str, int] | None = None,
        *,
        lease: str = "",
    ) -> AppendResult | None:
        """Append a turn's final events and pop it, only while ``turn_id`` is the oldest pending
        turn (and ``lease``, when given, holds the lease). None when it is not (already
        completed by an earlier try, aborted, or the lease was taken over)."""
        return await self._append(
            session_id, events, None, "complete", turn_id, counters, lease=lease
        )

    async def abort_turns(self, session_id: str, events: Sequence[NewEvent]) -> AppendResult | None:
        """Drop every pending turn and append ``events``; None when no turn was pending."""
        return await self._append(session_id, events, None, "abort", "")

    async def lease(self, session_id: str, op: str, token: str, lease_ms: int = 0) -> int:
        """Take, renew or release the session's turn lease for ``token`` (see the ``lease``
        script): 1 done, 2 taken over from a holder whose lease had expired, 0 another token
        holds it. ``SessionNotFound`` when the session is gone."""
        res = int(await self._run("lease", session_id, [op, token, lease_ms], "hold a lease"))
        if res == -1:
            raise _missing(session_id)
        return res

    async def turn_state(self, session_id: str) -> TurnState:
        """What the watchdog decides on, read atomically."""
        exists, pending, oldest, live, expiry = await self._run(
            "turn_state", session_id, [], "read a session's turns"
        )
        return TurnState(bool(exists), int(pending), str(oldest), bool(live), int(expiry))

    async def pending_turns(self, session_id: str) -> list[str]:
        """Message ids of pending turns, oldest first."""
        with store_errors("read pending turns"):
            turns: list[str] = await self._s.redis.lrange(
                self._session_keys(session_id).turns, 0, -1
            )
        return turns

    async def _append(
        self,
        session_id: str,
        events: Sequence[NewEvent],
        idempotency_key: str | None,
        turn_op: str,
        turn_id: str,
        counters: dict[str, int] | None = None,
        *,
        lease: str = "",
    ) -> AppendResult | None:
        if not events:
            raise InvalidInput("append needs at least one event")
        bodies = [encode_event(e, self._s.max_event_bytes) for e in events]
        durable = [e.type not in TRANSIENT_TYPES for e in events]
        counts = dict(counters or {})
        counts["messages"] = sum(1 for e in events if e.type in MESSAGE_ROLES)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise InvalidInput("Idempotency-Key must be 1-200 characters")
        registered = None
        if turn_op == "enqueue" and self._s.cluster:
            # The registry lives in another slot: registered first (once the input is known to
            # be good), so a turn can never be pending unseen by the watchdog.
            self._session_keys(session_id)  # validates the id
            with store_errors("register a pending turn"):
                registered = await self._s.scripts["pending_register"](
                    keys=[K.pending_key(self._s.prefix, self.tenant_id)], args=[session_id]
                )
        res = await self._run(
            "append_events",
            session_id,
            [
                idempotency_key or "",
                turn_op,
                turn_id,
                ",".join(f"{k}={int(v)}" for k, v in counts.items() if v),
                lease,
                self._s.max_pending_turns if turn_op == "enqueue" else 0,
                *[("D" if d else "L") + b for d, b in zip(durable, bodies, strict=True)],
            ],
            "append events",
        )
        if registered is not None and res[0] in ("missing", "store", "busy", "dup"):
            # A send that queued nothing takes its registration back: the earlier score again.
            # A first registration is removed only where no send can have queued a turn in the
            # same ms (the score would not tell): a session missing, or storage-only. Otherwise
            # it stays, and the watchdog prunes it once it finds no pending turn.
            had, before = int(registered[1]), int(registered[2])
            if had or res[0] in ("missing", "store"):
                await self._s.pending(self.tenant_id).undo(
                    Registered(session_id, int(registered[0])), before
                )
        if res[0] in ("missing", "store", "busy"):
            if res[0] == "busy":
                most = self._s.max_pending_turns
                raise LimitExceeded(
                    f"session {session_id!r} already has {most} turns waiting for a reply; "
                    "send again once one is answered",
                    limit="pending_turns",
                )
            if res[0] == "store":
                raise StorageOnly(
                    f"session {session_id!r} is storage-only: append items, it runs no turns",
                    session_id=session_id,
                )
            raise _missing(session_id)
        if res[0] == "dup":
            return AppendResult(event_ids=[res[1]], duplicate=True)
        if res[0] == "stale":
            return None
        ids = [str(i) for i in res[3:]]
        if self._s.cluster:
            incarnation = ids.pop()
            live = await self._publish(
                session_id,
                [(i if d else "", b) for i, d, b in zip(ids, durable, bodies, strict=True)],
                incarnation,
            )
            ids = [i if d else lid for i, d, lid in zip(ids, durable, live, strict=True)]
            await self._after_write(session_id, int(res[1]), int(res[2]))
        return AppendResult(event_ids=ids)

    async def legacy_sessions(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` still in the earlier layout (one pipelined EXISTS each)."""
        if not ids:
            return set()
        with store_errors("read sessions"):
            pipe = self._s.redis.pipeline(transaction=False)
            for sid in ids:
                pipe.exists(self._session_keys(sid).events)
            found = await pipe.execute()
        return {sid for sid, n in zip(ids, found, strict=True) if n}

    async def migrate(self, session_id: str) -> int:
        """Convert a session of the earlier layout (one stream of every event) into durable
        history; returns the items written, -1 when there was nothing to convert."""
        res = int(await self._run("migrate_session", session_id, [], "convert a session"))
        if res == -2:
            raise _missing(session_id)
        return res

    async def read_events_json(
        self,
        session_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = MAX_PAGE,
        reverse: bool = False,
    ) -> str:
        """A page of the durable history as one JSON array string (ready to serve), oldest
        first unless ``reverse``. ``after``/``before`` are exclusive event ids."""
        first, items = await self._items(session_id, after, before, limit, reverse)
        if reverse:
            items.reverse()
            return render_history_reversed(first, items)
        return render_history(first, items)

    async def _items(
        self,
        session_id: str,
        after: str | None,
        before: str | None,
        limit: int,
        reverse: bool,
        *,
        peek: int = 0,
    ) -> tuple[int, list[str]]:
        """History items of a page, oldest first, and the ordinal of the first; ``peek`` more
        items past the page's end (forward only) tell whether it was the last."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE} (got {limit})")
        limit += peek
        start = "" if after is None else _event_id(after)
        end = ""
        if before is not None:
            if not _event_id(before).strip("0-"):
                raise InvalidInput(f"no event is before {before!r}")
            end = before
        keys = self._session_keys(session_id)
        with store_errors("read events"):
            page = None
            if not end and not (reverse and start):
                page = await self._plain_page(session_id, keys, start, limit, reverse)
            if page is None:
                page = await self._searched_page(session_id, keys, start, end, limit, reverse)
            if page is None:  # the earlier layout: convert, then read
                await self.migrate(session_id)
                page = await self._searched_page(session_id, keys, start, end, limit, reverse)
        if page is None:  # pragma: no cover - converted just above
            raise InvalidInput("the session could not be converted")
        return page

    async def _plain_page(
        self, session_id: str, keys: K.SessionKeys, after: str, limit: int, reverse: bool
    ) -> tuple[int, list[str]] | None:
        """The page in one pipelined round trip of plain commands, when its bounds need no
        search: from the start, the newest ``limit``, or after an id that names an item. None
        when the Lua search must place the bounds (or the session needs converting)."""
        skip = 0
        if after:
            ms, _, n = after.partition("-")
            first, skip = int(n or 0), 1
            if first > MAX_ORDINAL:  # names no item (and is past what LRANGE takes)
                return None
        pipe = self._s.redis.pipeline(transaction=False)
        pipe.hmget(keys.meta, "id", "hbase")
        pipe.exists(keys.events)
        if reverse:
            pipe.lrange(keys.history, -limit, -1)
            pipe.llen(keys.history)
        elif after:
            pipe.lrange(keys.history, first, first + limit)
        else:
            pipe.lrange(keys.history, 0, limit - 1)
        reply = await pipe.execute()
        (sid, base), legacy, items = reply[0], reply[1], reply[2]
        if sid is None:
            raise _missing(session_id)
        if legacy or base not in (None, "0"):
            return None
        if reverse:
            return int(reply[3]) - len(items), items
        if not after:
            return 0, items
        if not items or not items[0].startswith(ms) or not items[0][len(ms)].isalpha():
            return None  # the id names no item: search
        return first + skip, items[skip:]

    async def _searched_page(
        self,
        session_id: str,
        keys: K.SessionKeys,
        after: str,
        before: str,
        limit: int,
        reverse: bool,
    ) -> tuple[int, list[str]] | None:
        args: list[str | int] = [after, before, limit, 1 if reverse else 0]
        reply = await self._s.scripts["read_history"](
            keys=[keys.meta, keys.history, keys.events], args=args
        )
        if reply[0] == "missing":
            raise _missing(session_id)
        if reply[0] == "legacy":
            return None
        return int(reply[1]), reply[2:]

    async def read_events(
        self,
        session_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = MAX_PAGE,
        reverse: bool = False,
    ) -> list[Event]:
        first, items = await self._items(session_id, after, before, limit, reverse)
        events = decode_history(first, items)
        if reverse:
            events.reverse()
        return events

    async def read_messages(
        self, session_id: str, *, after: str | None = None, limit: int = MAX_PAGE
    ) -> tuple[list[Message], str | None, bool]:
        """The messages among a page of ``limit`` events after ``after`` (as ``read_events``
        reads it), the id of the page's last event (None: empty), and whether events follow
        it (one more is read to know)."""
        first, items = await self._items(session_id, after, None, limit, False, peek=1)
        more = len(items) > limit
        del items[limit:]
        last = history_id(first + len(items) - 1, items[-1]) if items else None
        return messages_from_history(first, items), last, more

    async def last_events(self, session_id: str, n: int) -> list[Event]:
        events = await self.read_events(session_id, limit=n, reverse=True)
        events.reverse()
        return events

    async def iter_events(
        self, session_id: str, *, after: str | None = None, page: int = EXPORT_PAGE
    ) -> AsyncIterator[Event]:
        """Every event from the start (or after ``after``), page by page: the export stream."""
        cursor = after
        while True:
            batch = await self.read_events(session_id, after=cursor, limit=page)
            for ev in batch:
                yield ev
            if len(batch) < page:
                return
            cursor = batch[-1]["id"]
