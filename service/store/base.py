"""What every part of the tenant store shares: the process-wide ``Store`` (connection, scripts,
settings) and ``TenantBase`` (one tenant's keys, the script runner, the Cluster index follow-up).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson
from redis.asyncio.cluster import RedisCluster

from service import keys as K
from service import scripts, scripts_history, scripts_items
from service.connections import LuaScript, RedisClient, store_errors
from service.errors import (
    InvalidInput,
    PayloadTooLarge,
    SessionNotFound,
)
from service.events import encode_body
from service.ids import validate_history_id
from service.models import (
    Bookmark,
    NewEvent,
    ms_to_datetime,
)
from service.pending import PendingRegistry
from service.store.hub import LiveHub

if TYPE_CHECKING:
    from service.store import TenantStore


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
    "completion_tokens", "compacted_through", "mode",
)  # fmt: skip
KEPT_TENANT_STORES = 10_000
# Cluster: how long the index remembers a delete (a later touch of an earlier write is ignored),
# and how old a seat must be before a pass that finds its session missing may release it (a
# create in flight holds its seat before its session exists).
TOMBSTONE_MS = 10 * 60 * 1000
SEAT_GRACE_MS = 10 * 1000  # beyond a create's socket timeout (connections.py: 5 s)
MAX_BLOCK_MS = 4_000  # socket_timeout in connections.py is 5 s


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_event(event: NewEvent, max_bytes: int) -> str:
    """The stored form of an event without its time (``<code><data JSON>``, see
    ``service.events``); refuses one whose data is larger than ``max_bytes``."""
    if "{" in event.type or not event.type:
        raise InvalidInput(f"event type {event.type!r} is not allowed")
    try:
        data = orjson.dumps(event.data).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits, keys that are not strings
        data = _JSON.encode(event.data)
    size = len(data.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"event of {size} bytes is over the limit of {max_bytes} bytes", limit=max_bytes
        )
    return encode_body(event.type, data)


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
        max_pending_turns: int = 100,
        live_window_seconds: int = 300,
        live_window_events: int = 10_000,
        live_shards: int = 1,
        seat_grace_ms: int = SEAT_GRACE_MS,
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
        self.max_pending_turns = max_pending_turns
        self.live_window_ms = live_window_seconds * 1000
        self.live_window_events = live_window_events
        self.live_shards = live_shards
        self.seat_grace_ms = seat_grace_ms
        # Cluster: where each tenant's index repair slice continues (``service.sweep``)
        self.repair_cursors: dict[str, tuple[int, str] | None] = {}
        self.scripts = {
            s.name: LuaScript(self.redis, s.text)
            for s in (*scripts.ALL, *scripts_history.ALL, *scripts_items.ALL)
        }
        self.hub = LiveHub(redis, cluster=self.cluster)
        self._tenants: dict[str, TenantStore] = {}

    def tenant(self, tenant_id: str) -> TenantStore:
        """The store of one tenant (kept: one is asked for on every request)."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            if len(self._tenants) >= KEPT_TENANT_STORES:
                self._tenants.clear()
            from service.store import TenantStore  # the assembled class imports this module

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


class TenantBase:
    """One tenant's keys and the session script runner; the operations live in the mixins."""

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._s = store
        self.tenant_id = tenant_id
        self.prefix = K.tenant_prefix(store.prefix, tenant_id)

    @property
    def store(self) -> Store:
        return self._s

    @property
    def cluster(self) -> bool:
        return self._s.cluster

    # --- keys ----------------------------------------------------------------------------------
    async def get_meta_fields(self, session_id: str, *fields: str) -> list[str | None]:
        """Metadata fields read together (None for each one the session lacks)."""
        with store_errors("read a session"):
            values: list[str | None] = await self._s.redis.hmget(
                self._session_keys(session_id).meta, list(fields)
            )
        return values

    def _session_keys(self, session_id: str) -> K.SessionKeys:
        return K.session_keys(self._s.prefix, self.tenant_id, session_id)

    def _index_keys(self, session_id: str) -> K.IndexKeys:
        shard = K.index_shard(session_id, self._s.index_shards)
        return K.index_keys(self._s.prefix, self.tenant_id, shard)

    def _live_key(self, session_id: str) -> str:
        shard = K.live_shard(session_id, self._s.live_shards)
        return K.live_key(self._s.prefix, self.tenant_id, shard)

    def _script_keys(self, session_id: str) -> list[str]:
        """KEYS for a session script: the index, lifecycle and live keys join on a single Redis
        only."""
        keys = self._session_keys(session_id).all()
        if not self._s.cluster:
            idx = self._index_keys(session_id)
            keys += [
                idx.idx,
                idx.exp,
                K.lifecycle_key(self._s.prefix, self.tenant_id),
                K.pending_key(self._s.prefix, self.tenant_id),
                self._live_key(session_id),
            ]
        return keys

    async def _run(
        self,
        name: str,
        session_id: str,
        args: Sequence[str | int],
        action: str,
        extra_keys: Sequence[str] = (),
    ) -> Any:
        head: list[str | int] = [
            LIFECYCLE_MAXLEN, session_id, self._s.live_window_events, self._s.live_window_ms
        ]  # fmt: skip
        with store_errors(action):
            return await self._s.scripts[name](
                keys=[*self._script_keys(session_id), *extra_keys], args=[*head, *args]
            )

    async def _read_converted(
        self, session_id: str, action: str, reads: Callable[[Any], object]
    ) -> list[Any]:
        """The replies of the commands ``reads`` puts in a pipeline, read in one round trip; a
        session of the earlier layout is converted first (then they are read again), so what
        they read names the ids its history has."""
        events = self._session_keys(session_id).events
        replies: list[Any] = []
        for converted in (False, True):
            with store_errors(action):
                pipe = self._s.redis.pipeline(transaction=False)
                reads(pipe)
                pipe.exists(events)
                *replies, legacy = list(await pipe.execute())
            if not legacy or converted:
                break
            await self._run("migrate_session", session_id, [], "convert a session")
        return replies

    async def _publish(
        self, session_id: str, entries: Sequence[tuple[str, str]], incarnation: str
    ) -> list[str]:
        """Cluster mode: the live copies of what a session script wrote, as ``(history id or
        '', body)`` pairs, on the session's live shard (another slot). Returns the live ids.
        ``incarnation`` is the session's, as the script's reply gives it."""
        if not entries:
            return []
        args: list[str | int] = [
            self._s.live_window_events, self._s.live_window_ms, session_id, incarnation
        ]  # fmt: skip
        for history_id, body in entries:
            args += [history_id, body]
        with store_errors("publish live events"):
            ids = await self._s.scripts["publish_live"](
                keys=[self._live_key(session_id)], args=args
            )
        return [str(i) for i in ids]

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
                    keys=[idx.idx, idx.exp, idx.gone],
                    args=[session_id, now, deadline, op, TOMBSTONE_MS],
                )
            ]
            if lifecycle is not None:
                calls.append(self._lifecycle(lifecycle, session_id, now))
            if remove:  # a deleted session has no pending turn left, and holds no seat
                calls.append(
                    self._s.redis.zrem(K.pending_key(self._s.prefix, self.tenant_id), session_id)
                )
                calls.append(self._seat("release", session_id))
            await asyncio.gather(*calls)

    async def _seat(
        self, op: str, session_id: str, *, limit: int = 0, min_age_ms: int | None = None
    ) -> int:
        """Cluster mode: take or release the session's seat (``SEAT``)."""
        age = "" if min_age_ms is None else min_age_ms
        with store_errors("count the tenant's sessions"):
            return int(
                await self._s.scripts["seat"](
                    keys=[K.seats_key(self._s.prefix, self.tenant_id)],
                    args=[op, session_id, limit, age],
                )
            )

    async def _server_ms(self) -> int:
        """The data Redis' clock (``TIME``) in ms: times come from Redis, never the API host."""
        seconds, micros = await self._s.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def _lifecycle(self, kind: str, session_id: str, now: int) -> None:
        key = K.lifecycle_key(self._s.prefix, self.tenant_id)
        # ``p`` as the scripts write it; read apart from the write, it may name an entry older
        # than the one before, which makes a reader's check weaker, never wrong
        last = await self._s.redis.xrevrange(key, count=1)
        await self._s.redis.xadd(
            key,
            {
                "type": kind,
                "session_id": session_id,
                "at": str(now),
                "p": last[0][0] if last else "",
            },
            maxlen=LIFECYCLE_MAXLEN,
            approximate=True,
        )

    async def exists(self, session_id: str) -> bool:
        with store_errors("read a session"):
            return bool(await self._s.redis.exists(self._session_keys(session_id).meta))


def _missing(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"session {session_id!r} does not exist", session_id=session_id)


def _event_id(value: str) -> str:
    return validate_history_id(value)


def _bookmark(raw: str) -> Bookmark:
    data = json.loads(raw)
    data["created_at"] = ms_to_datetime(int(data.pop("created")))
    return Bookmark.model_validate(data)
