"""The Redis session store: the only code that runs the Lua scripts and knows the key layout.

``Store`` holds the connection and the registered scripts, once per process. ``store.tenant(t)``
returns a ``TenantStore`` bound to one tenant: it can reach no key outside ``P:t:``, whatever ids
it is given, because every key comes from ``service.keys`` after the id is validated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service import keys as K
from service import scripts
from service.connections import LuaScript, RedisClient, store_errors
from service.errors import (
    BookmarkNotFound,
    Conflict,
    InvalidInput,
    LimitExceeded,
    PayloadTooLarge,
    SessionNotFound,
)
from service.events import decode_page, event_from_entry, render_page
from service.ids import new_session_id, validate_bookmark_name, validate_labels, validate_stream_id
from service.models import (
    MESSAGE_ROLES,
    AppendResult,
    Bookmark,
    Event,
    EventType,
    NewEvent,
    SessionInfo,
    SessionPage,
    ms_to_datetime,
    session_info_from_hash,
)
from service.paging import ShardPage, decode_cursor, encode_cursor, merge_shards
from service.pending import PendingRegistry, Registered
from service.retention import SessionFacts

LIFECYCLE_MAXLEN = 10_000
LIST_SCAN_BUDGET = 1_000
EXPORT_PAGE = 500
MAX_PAGE = 1_000
# A list page ends early once its items' text (summaries, names, labels) passes this many bytes;
# its cursor continues after the last item returned. List items leave out the system message
# (up to max_message_bytes each), and the store reads only the fields they show.
LIST_PAGE_BYTES = 1024 * 1024
MAX_BOOKMARKS = 1_000  # per session: its bookmark list is one response
LIST_FIELDS = (
    "id", "model", "streaming", "summary", "name", "labels", "infinite", "ttl", "created",
    "modified", "events", "messages", "last_event_id", "status", "prompt_tokens",
    "completion_tokens", "compacted_through",
)  # fmt: skip
KEPT_TENANT_STORES = 10_000
MAX_BLOCK_MS = 4_000  # socket_timeout in connections.py is 5 s


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_event(event: NewEvent, max_bytes: int) -> str:
    """The stored form of an event (compact JSON); refuses one larger than ``max_bytes``."""
    doc = {"type": event.type, "data": event.data}
    try:
        body = orjson.dumps(doc).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits, keys that are not strings
        body = _JSON.encode(doc)
    size = len(body.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"event of {size} bytes is over the limit of {max_bytes} bytes", limit=max_bytes
        )
    return body


@dataclass(frozen=True, slots=True)
class TurnState:
    """A session's turns as the watchdog sees them."""

    exists: bool
    pending: int
    oldest: str
    lease_live: bool


class Store:
    """Connection, scripts and settings shared by every tenant in this process."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "sess",
        index_shards: int = 1,
        default_ttl: int = 7 * 24 * 3600,
        max_event_bytes: int = 256 * 1024,
        max_sessions: int = 100_000,
    ) -> None:
        # redis-py types every async reply as ``Awaitable[T] | T``, which strict mypy cannot
        # await; the client is typed loosely here and every reply is parsed where it is read.
        self.redis: Any = cast(Any, redis)
        self.prefix = prefix
        self.cluster = isinstance(redis, RedisCluster)
        self.index_shards = index_shards
        self.default_ttl = default_ttl
        self.max_event_bytes = max_event_bytes
        self.max_sessions = max_sessions
        self.scripts = {s.name: LuaScript(self.redis, s.text) for s in scripts.ALL}
        self.reader: Any = _raw_stream_reader(redis)
        self._tenants: dict[str, TenantStore] = {}

    def tenant(self, tenant_id: str) -> TenantStore:
        """The store of one tenant (kept: one is asked for on every request)."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            if len(self._tenants) >= KEPT_TENANT_STORES:
                self._tenants.clear()
            tenant = self._tenants[tenant_id] = TenantStore(self, tenant_id)
        return tenant

    def pending(self, tenant_id: str) -> PendingRegistry:
        """The registry of ``tenant_id``'s sessions with pending turns."""
        return PendingRegistry(self.redis, self.scripts, self.prefix, tenant_id)

    async def server_time_ms(self) -> int:
        """Now, by the Redis server's clock (on a Cluster, by one of its nodes)."""
        with store_errors("read the server time"):
            sec, usec = await self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def ping(self) -> None:
        with store_errors("answer a ping"):
            await self.redis.ping()


class TenantStore:
    """Session operations for one tenant."""

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._s = store
        self.tenant_id = tenant_id
        self.prefix = K.tenant_prefix(store.prefix, tenant_id)

    # --- keys ----------------------------------------------------------------------------------
    def _session_keys(self, session_id: str) -> K.SessionKeys:
        return K.session_keys(self._s.prefix, self.tenant_id, session_id)

    def _index_keys(self, session_id: str) -> K.IndexKeys:
        shard = K.index_shard(session_id, self._s.index_shards)
        return K.index_keys(self._s.prefix, self.tenant_id, shard)

    def _script_keys(self, session_id: str) -> list[str]:
        """KEYS for a session script: the index and lifecycle keys join on a single Redis only."""
        keys = self._session_keys(session_id).all()
        if not self._s.cluster:
            idx = self._index_keys(session_id)
            keys += [
                idx.idx,
                idx.exp,
                K.lifecycle_key(self._s.prefix, self.tenant_id),
                K.pending_key(self._s.prefix, self.tenant_id),
            ]
        return keys

    async def _run(self, name: str, session_id: str, args: Sequence[str | int], action: str) -> Any:
        with store_errors(action):
            return await self._s.scripts[name](
                keys=self._script_keys(session_id), args=[LIFECYCLE_MAXLEN, session_id, *args]
            )

    async def _after_write(
        self,
        session_id: str,
        now: int,
        deadline: int,
        *,
        remove: bool = False,
        lifecycle: str | None = None,
    ) -> None:
        """Cluster mode: bring the index (other slots) up to date after a session script."""
        if not self._s.cluster:
            return
        idx = self._index_keys(session_id)
        op = "remove" if remove else "touch"
        with store_errors("update the session index"):
            calls = [
                self._s.scripts["touch_index"](
                    keys=[idx.idx, idx.exp], args=[session_id, now, deadline, op]
                )
            ]
            if lifecycle is not None:
                calls.append(self._lifecycle(lifecycle, session_id, now))
            if remove:  # a deleted session has no pending turn left
                calls.append(
                    self._s.redis.zrem(K.pending_key(self._s.prefix, self.tenant_id), session_id)
                )
            await asyncio.gather(*calls)

    async def _server_ms(self) -> int:
        """The data Redis' clock (``TIME``) in ms: times come from Redis, never the API host."""
        seconds, micros = await self._s.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def _lifecycle(self, kind: str, session_id: str, now: int) -> None:
        await self._s.redis.xadd(
            K.lifecycle_key(self._s.prefix, self.tenant_id),
            {"type": kind, "session_id": session_id, "at": str(now)},
            maxlen=LIFECYCLE_MAXLEN,
            approximate=True,
        )

    # --- sessions ------------------------------------------------------------------------------
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
    ) -> SessionInfo:
        sid = session_id if session_id is not None else new_session_id()
        self._session_keys(sid)  # validates the id before anything else
        ttl = self._ttl(ttl_seconds)
        limit = self._s.max_sessions if max_sessions is None else max_sessions
        if self._s.cluster and limit > 0:
            live = await self.count_live()
            if live >= limit:
                raise LimitExceeded(f"tenant already holds {live} sessions (limit {limit})")
        start = encode_event(
            NewEvent(type=EventType.SESSION_START, data={"sessionId": sid, "model": model}),
            self._s.max_event_bytes,
        )
        fields: list[str | int] = [
            "model", model, "system_message", system_message,
            "streaming", int(streaming), "name", name, "summary", "",
            "labels", json.dumps(validate_labels(labels or {}), separators=(",", ":")),
        ]  # fmt: skip
        if len(system_message.encode()) > self._s.max_event_bytes:
            raise PayloadTooLarge(
                f"system message is over the limit of {self._s.max_event_bytes} bytes"
            )
        res = await self._run(
            "create_session",
            sid,
            [ttl, int(infinite), 0 if self._s.cluster else limit, start, *fields],
            "create a session",
        )
        if res[0] == "conflict":
            raise Conflict(f"session {sid!r} already exists", session_id=sid)
        if res[0] == "limit":
            raise LimitExceeded(f"tenant already holds {res[1]} sessions (limit {limit})")
        await self._after_write(sid, int(res[1]), int(res[3]), lifecycle="session.created")
        return await self.get(sid)

    def _ttl(self, ttl_seconds: int | None) -> int:
        ttl = self._s.default_ttl if ttl_seconds is None else ttl_seconds
        if not isinstance(ttl, int) or ttl < 1 or ttl > 10 * 365 * 24 * 3600:
            raise InvalidInput(f"ttl_seconds must be an integer from 1 to 315360000 (got {ttl!r})")
        return ttl

    async def get(self, session_id: str) -> SessionInfo:
        keys = self._session_keys(session_id)
        with store_errors("read a session"):
            raw = await self._s.redis.hgetall(keys.meta)
        if not raw:
            raise _missing(session_id)
        return session_info_from_hash(raw)

    async def get_meta_field(self, session_id: str, field: str) -> str | None:
        """One metadata field (for large fields kept out of ``SessionInfo``)."""
        with store_errors("read a session"):
            value: str | None = await self._s.redis.hget(self._session_keys(session_id).meta, field)
        return value

    async def exists(self, session_id: str) -> bool:
        with store_errors("read a session"):
            return bool(await self._s.redis.exists(self._session_keys(session_id).meta))

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
        await self._after_write(session_id, 0, -1, remove=True, lifecycle="session.deleted")
        return True

    # --- events --------------------------------------------------------------------------------
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
        exists, pending, oldest, live = await self._run(
            "turn_state", session_id, [], "read a session's turns"
        )
        return TurnState(bool(exists), int(pending), str(oldest), bool(live))

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
                *bodies,
            ],
            "append events",
        )
        if res[0] == "missing":
            if registered is not None and not int(registered[1]):  # a send to no session
                await self._s.pending(self.tenant_id).prune(
                    Registered(session_id, int(registered[0]))
                )
            raise _missing(session_id)
        if res[0] == "dup":
            return AppendResult(event_ids=[res[1]], duplicate=True)
        if res[0] == "stale":
            return None
        await self._after_write(session_id, int(res[1]), int(res[2]))
        return AppendResult(event_ids=list(res[3:]))

    async def wait_events(
        self, session_id: str, after: str, *, timeout_ms: int, limit: int = 500
    ) -> list[Event]:
        """Events after ``after`` ("0-0" = from the start), waiting up to ``timeout_ms`` for the
        first one to arrive (XREAD BLOCK). [] on timeout. For live follow (SSE).

        One wait lasts at most ``MAX_BLOCK_MS``, below the client's socket timeout, which would
        otherwise cut a long blocking read; callers loop."""
        key = self._session_keys(session_id).events
        block = max(1, min(timeout_ms, MAX_BLOCK_MS))
        with store_errors("follow events"):
            reply = await self._s.redis.xread({key: _event_id(after)}, count=limit, block=block)
        if not reply:
            return []
        rows = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return [event_from_entry(eid, fields["e"]) for eid, fields in rows]

    async def read_events_json(
        self,
        session_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = MAX_PAGE,
        reverse: bool = False,
    ) -> str:
        """A page of events as one JSON array string (ready to serve), oldest first unless
        ``reverse``. ``after``/``before`` are exclusive event ids."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE} (got {limit})")
        start = "-" if after is None else "(" + _event_id(after)
        end = "+" if before is None else _exclusive_end(before)
        keys = self._session_keys(session_id)
        with store_errors("read events"):
            if reverse:
                reply = await self._s.reader.execute_command(
                    "XREVRANGE", keys.events, end, start, "COUNT", limit
                )
            else:
                reply = await self._s.reader.execute_command(
                    "XRANGE", keys.events, start, end, "COUNT", limit
                )
            # A live session always has its session.start event, so an empty page is the only
            # case that needs a second look (an empty range, or no such session).
            if not reply and not await self._s.redis.exists(keys.meta):
                raise _missing(session_id)
        return render_page(_rows(reply))

    async def read_events(
        self,
        session_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = MAX_PAGE,
        reverse: bool = False,
    ) -> list[Event]:
        return decode_page(
            await self.read_events_json(
                session_id, after=after, before=before, limit=limit, reverse=reverse
            )
        )

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

    # --- bookmarks -----------------------------------------------------------------------------
    async def set_bookmark(self, session_id: str, name: str, description: str = "") -> Bookmark:
        validate_bookmark_name(name)
        if len(description) > 1000:
            raise InvalidInput("bookmark description must be at most 1000 characters")
        partial = json.dumps({"name": name, "description": description}, ensure_ascii=False)
        args: list[str | int] = [name, partial, MAX_BOOKMARKS]
        res = await self._run("set_bookmark", session_id, args, "set a bookmark")
        if res[0] == "missing":
            raise _missing(session_id)
        if res[0] == "limit":
            raise LimitExceeded(
                f"session {session_id!r} already holds {MAX_BOOKMARKS} bookmarks", limit="bookmarks"
            )
        return _bookmark(res[1])

    async def list_bookmarks(self, session_id: str) -> list[Bookmark]:
        keys = self._session_keys(session_id)
        with store_errors("read bookmarks"):
            exists, raw = await asyncio.gather(
                self._s.redis.exists(keys.meta), self._s.redis.hgetall(keys.bookmarks)
            )
        if not exists:
            raise _missing(session_id)
        return sorted((_bookmark(v) for v in raw.values()), key=lambda b: b.event_id)

    async def get_bookmark(self, session_id: str, name: str) -> Bookmark:
        validate_bookmark_name(name)
        for bm in await self.list_bookmarks(session_id):
            if bm.name == name:
                return bm
        raise BookmarkNotFound(f"bookmark {name!r} does not exist in session {session_id!r}")

    async def delete_bookmark(self, session_id: str, name: str) -> None:
        validate_bookmark_name(name)
        res = await self._run("delete_bookmark", session_id, [name], "delete a bookmark")
        if res[0] == "missing":
            raise _missing(session_id)
        if int(res[1]) == 0:
            raise BookmarkNotFound(f"bookmark {name!r} does not exist in session {session_id!r}")

    async def events_since_bookmark(
        self, session_id: str, name: str, *, limit: int = MAX_PAGE
    ) -> list[Event]:
        bm = await self.get_bookmark(session_id, name)
        return await self.read_events(session_id, after=bm.event_id, limit=limit)

    # --- listing -------------------------------------------------------------------------------
    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None, labels: dict[str, str] | None = None
    ) -> SessionPage:
        """Sessions newest-modified first. Cost per page is independent of the tenant's size; a
        label filter reads at most a few index pages per call and may return a short page with
        a cursor to continue."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE} (got {limit})")
        want = validate_labels(labels) if labels else {}
        out: list[SessionInfo] = []
        size = 0
        last = ("", "")  # the (score, member) of the last item taken
        next_cursor = cursor
        for _ in range(5 if want else 1):
            entries, next_cursor = await self._index_page(limit - len(out), next_cursor)
            infos = await self._infos([m for _, m in entries])
            for (score, member), info in zip(entries, infos, strict=True):
                if info is None or any(info.labels.get(k) != v for k, v in want.items()):
                    continue
                if out and size + _listed_bytes(info) > LIST_PAGE_BYTES:
                    # Cut the page: continue strictly after the last item returned.
                    return SessionPage(data=out, next_cursor=encode_cursor(*last))
                out.append(info)
                size += _listed_bytes(info)
                last = (score, member)
            if next_cursor is None or len(out) >= limit:
                break
        return SessionPage(data=out, next_cursor=next_cursor)

    async def _index_page(
        self, count: int, cursor: str | None
    ) -> tuple[list[tuple[str, str]], str | None]:
        """Up to ``count`` index entries ``(score, member)`` after ``cursor``, and the next one."""
        score, member = decode_cursor(cursor)
        calls = []
        for shard in range(self._s.index_shards):
            idx = K.index_keys(self._s.prefix, self.tenant_id, shard)
            calls.append(
                self._s.scripts["list_page"](
                    keys=[idx.idx, idx.exp], args=["", score, member, count, LIST_SCAN_BUDGET]
                )
            )
        with store_errors("list sessions"):
            results = await asyncio.gather(*calls)
        pages: list[ShardPage] = []
        for live, suspect, exhausted, last_m, last_s in results:
            entries = list(zip(live[1::2], live[0::2], strict=True))
            if self._s.cluster and suspect:
                entries += await self._confirm_alive(suspect)
            pages.append(ShardPage(entries, bool(exhausted), (str(last_s), str(last_m))))
        return merge_shards(pages, count)

    async def _confirm_alive(self, flat: list[str]) -> list[tuple[str, str]]:
        """Cluster mode: entries the index believes expired may have been refreshed by a write
        whose index update has not landed; the session's own keys are the truth."""
        pairs = list(zip(flat[1::2], flat[0::2], strict=True))
        with store_errors("list sessions"):
            alive = await asyncio.gather(*(self.exists(m) for _, m in pairs))
        return [p for p, ok in zip(pairs, alive, strict=True) if ok]

    async def _infos(self, ids: list[str]) -> list[SessionInfo | None]:
        """The listed fields of each session (None for one gone since it was indexed); the
        system message and other large fields are not read."""
        if not ids:
            return []
        with store_errors("read sessions"):
            pipe = self._s.redis.pipeline(transaction=False)  # one round trip (per node)
            for i in ids:
                pipe.hmget(self._session_keys(i).meta, LIST_FIELDS)
            rows = await pipe.execute()
        out: list[SessionInfo | None] = []
        for row in rows:
            raw = {k: v for k, v in zip(LIST_FIELDS, row, strict=True) if v is not None}
            out.append(session_info_from_hash(raw) if "id" in raw else None)
        return out

    async def count_live(self) -> int:
        """Live sessions of the tenant: index size minus entries past their deadline (by the
        server's clock)."""
        return sum(card - expired for card, _, expired in await self._index_counts(None))

    async def _index_counts(self, now_ms: int | None) -> list[tuple[int, int, int]]:
        """Per shard: (index entries, expiry entries, expiry entries at or before ``now_ms``,
        else the server's ``TIME``)."""
        script = self._s.scripts["count_live"]
        now = "" if now_ms is None else now_ms
        with store_errors("count sessions"):
            replies = await asyncio.gather(
                *(
                    script(keys=[idx.idx, idx.exp], args=[now])
                    for idx in (
                        K.index_keys(self._s.prefix, self.tenant_id, shard)
                        for shard in range(self._s.index_shards)
                    )
                )
            )
        return [(int(a), int(b), int(c)) for a, b, c in replies]

    # --- cleanup, sweep, stats -----------------------------------------------------------------
    async def index_oldest(
        self,
        count: int,
        *,
        after: tuple[int, str] | None = None,
        max_modified_ms: int | None = None,
    ) -> list[tuple[str, int]]:
        """Index entries least recently modified first, as ``(session_id, modified_ms)``: at most
        ``count``, strictly after the cursor ``after`` = ``(modified_ms, session_id)``, modified
        at or before ``max_modified_ms``. Each shard reads O(log N + count) entries, so walking
        the index costs what it returns, and a session written meanwhile moves past the walk."""
        return await self._walk("idx", count, after, max_modified_ms)

    async def expired_after(
        self, now_ms: int, count: int, *, after: tuple[int, str] | None = None
    ) -> list[tuple[str, int]]:
        """Expiry-index entries whose deadline is at or before ``now_ms``, earliest first, as
        ``(session_id, deadline_ms)``, strictly after the cursor ``after`` = ``(deadline_ms,
        session_id)``, so entries a sweep leaves in place (live sessions) do not hold back the
        ones behind them."""
        return await self._walk("exp", count, after, now_ms)

    async def _walk(
        self, kind: str, count: int, after: tuple[int, str] | None, max_score: int | None
    ) -> list[tuple[str, int]]:
        if count < 1:
            return []
        low = "-inf" if after is None else after[0]
        high = "+inf" if max_score is None else max_score

        async def shard_run(shard: int) -> list[tuple[int, str]]:
            idx = K.index_keys(self._s.prefix, self.tenant_id, shard)
            key = idx.idx if kind == "idx" else idx.exp
            out: list[tuple[int, str]] = []
            offset = 0
            while len(out) < count:
                rows = await self._s.redis.zrangebyscore(
                    key, low, high, offset, count, withscores=True, score_cast_func=int
                )
                for member, score in rows:
                    if after is None or (score, member) > after:
                        out.append((score, member))
                if len(rows) < count:
                    break
                offset += len(rows)
            return out[:count]

        with store_errors("walk the session index"):
            runs = await asyncio.gather(*(shard_run(i) for i in range(self._s.index_shards)))
        merged = sorted(entry for run in runs for entry in run)[:count]
        return [(member, score) for score, member in merged]

    async def session_facts(self, ids: Sequence[str]) -> list[SessionFacts]:
        """What cleanup decides on, for each id that still exists (one pipelined read)."""
        if not ids:
            return []
        fields = ("created", "modified", "infinite", "labels", "events")
        with store_errors("read sessions"):
            pipe = self._s.redis.pipeline(transaction=False)
            for sid in ids:
                pipe.hmget(self._session_keys(sid).meta, fields)
            rows = await pipe.execute()
        out: list[SessionFacts] = []
        for sid, (created, modified, infinite, labels, events) in zip(ids, rows, strict=True):
            if created is None:
                continue  # expired or deleted since it was listed
            out.append(
                SessionFacts(
                    session_id=sid,
                    created_ms=int(created),
                    modified_ms=int(modified or created),
                    infinite=infinite == "1",
                    labels=json.loads(labels or "{}"),
                    events=int(events or 0),
                )
            )
        return out

    async def count_finite_live(self, now_ms: int | None = None) -> int:
        """Live sessions that have a TTL (the expiry index minus entries past their deadline,
        ``now_ms`` or else the server's clock); ``count_live() - count_finite_live()`` is the
        number of infinite sessions."""
        return sum(exp - expired for _, exp, expired in await self._index_counts(now_ms))

    async def sweep_session(self, session_id: str) -> str:
        """Sweeper step for an index entry past its deadline. Returns ``"swept"`` when this call
        removed the session's leftovers and index entries and emitted its one ``session.expired``
        event; ``"alive"`` when the session exists (nothing changed); ``"gone"`` when another
        sweep or a delete got there first. Safe to run from overlapping sweeps."""
        res = int(await self._run("sweep_session", session_id, [], "sweep a session"))
        if res == -1:
            return "alive"
        if res == 1:
            return "swept"
        if not self._s.cluster:
            return "gone"
        idx = self._index_keys(session_id)
        with store_errors("sweep a session"):
            removed = await self._s.scripts["sweep_index"](
                keys=[idx.idx, idx.exp], args=[session_id]
            )
            if not int(removed):
                return "gone"
            await self._lifecycle("session.expired", session_id, await self._server_ms())
        return "swept"

    async def sample_ids(self, n: int) -> list[str]:
        """Up to ``n`` random indexed session ids (for estimates)."""
        per_shard = max(1, -(-n // self._s.index_shards))
        out: list[str] = []
        with store_errors("sample sessions"):
            for shard in range(self._s.index_shards):
                idx = K.index_keys(self._s.prefix, self.tenant_id, shard).idx
                out += await self._s.redis.zrandmember(idx, per_shard) or []
        return out[:n]

    async def memory_usage(self, ids: Sequence[str]) -> tuple[int, int]:
        """``(sessions found, bytes)``: ``MEMORY USAGE`` summed over every key of these sessions
        (Redis samples large structures, so this is itself an estimate)."""
        if not ids:
            return 0, 0
        with store_errors("measure memory"):
            pipe = self._s.redis.pipeline(transaction=False)
            for sid in ids:
                for key in self._session_keys(sid).all():
                    pipe.memory_usage(key)
            sizes = await pipe.execute()
        kinds = len(K.SESSION_KEY_KINDS)
        found = sum(1 for i in range(0, len(sizes), kinds) if sizes[i] is not None)
        return found, sum(int(s or 0) for s in sizes)

    async def shared_memory_usage(self) -> int:
        """``MEMORY USAGE`` of the tenant's index shards and lifecycle stream."""
        keys = [K.lifecycle_key(self._s.prefix, self.tenant_id)]
        for shard in range(self._s.index_shards):
            idx = K.index_keys(self._s.prefix, self.tenant_id, shard)
            keys += [idx.idx, idx.exp]
        with store_errors("measure memory"):
            pipe = self._s.redis.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key)
            sizes = await pipe.execute()
        return sum(int(s or 0) for s in sizes)


def _missing(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"session {session_id!r} does not exist", session_id=session_id)


def _event_id(value: str) -> str:
    return validate_stream_id(value)


def _exclusive_end(before: str) -> str:
    """``before`` as an exclusive range end; nothing precedes 0-0, which Redis refuses there."""
    if not validate_stream_id(before).strip("0-"):
        raise InvalidInput(f"no event is before {before!r}")
    return "(" + before


def _rows(reply: Any) -> list[tuple[str, str]]:
    """(id, stored JSON) pairs from a raw XRANGE reply (nested lists) or, on a Cluster client,
    redis-py's parsed one ((id, {field: value}) tuples)."""
    out = []
    for event_id, fields in reply:
        if isinstance(fields, dict):
            out.append((event_id, fields["e"]))
        else:
            out.append((event_id, fields[fields.index("e") + 1]))
    return out


def _bookmark(raw: str) -> Bookmark:
    data = json.loads(raw)
    data["created_at"] = ms_to_datetime(int(data.pop("created")))
    return Bookmark.model_validate(data)


def _raw_stream_reader(redis: RedisClient) -> Any:
    """A view of the same connection pool whose XRANGE/XREVRANGE replies skip redis-py's
    per-entry tuple and dict building (half the cost of reading a stream); ``_rows`` reads
    the plain nested lists instead. A Cluster client keeps its callbacks (see ``_rows``)."""
    if isinstance(redis, RedisCluster):
        return redis
    reader = Redis(connection_pool=cast(Any, redis.connection_pool))
    reader.response_callbacks = dict(reader.response_callbacks)
    for command in ("XRANGE", "XREVRANGE"):
        reader.response_callbacks.pop(command, None)
    return reader


def _listed_bytes(info: SessionInfo) -> int:
    """About what a session adds to a list page: its free text plus a fixed part."""
    labels = sum(len(k) + len(v.encode()) for k, v in info.labels.items())
    return 512 + len(info.summary.encode()) + len(info.name.encode()) + labels
