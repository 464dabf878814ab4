"""One reader of live streams per process, shared by every subscriber in it.

An open SSE stream or a waiting ``send_and_wait`` costs no Redis connection of its own: the hub
runs ONE blocking ``XREAD`` over every stream that has subscribers (on a Cluster, one per stream,
as XREAD cannot span slots) and hands each entry to the subscribers whose filter it matches
(the session id of a live entry, for instance). A subscription may start from an earlier entry:
it is first given what lies between that entry and the reader's position (one XRANGE), then the
entries the reader delivers; nothing is missed or repeated in between, because registering takes
the reader's position and the reader delivers only what follows it, both in one event loop.

A new stream joins by waking the reader: its blocking read is cancelled (redis-py drops that
connection, which the pool replaces) and a new read covers the new stream too.

A stream is trimmed to a window; a reader that falls further behind (a paused process, a lost
Redis connection while writers go on) would skip what was trimmed unawares. Each live entry
names the entry before it (field ``p``), so the first entry a read returns tells whether the
stream still held everything after the reader's position. When it did not, every subscriber of
that stream is handed a gap marker (``is_gap``) in its place among the entries: the live
window cannot say what it held, and the subscriber re-reads the durable history.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Iterable
from typing import Any

from service.connections import store_errors
from service.ids import id_order
from service.logging import get_logger

log = get_logger("service.store.hub")

Entry = tuple[str, dict[str, str]]
GAP: Entry = ("", {})  # in place of entries trimmed before the reader read them
BLOCK_MS = 4_000  # below the client's socket timeout (5 s), which would cut a longer read
BATCH = 1_000
CATCH_UP_PAGE = 1_000
RETRY_S = 0.25


class Subscription:
    """Entries of one stream that match ``field == value`` (every entry when ``field`` is None),
    in order. With ``incarnation`` (the names of one incarnation, see ``incarnation_of``),
    entries of another incarnation (field ``c``: a session of the same id, deleted since) are
    passed over; entries without one (written before the field existed) are not. ``notify`` is
    set whenever entries arrive; ``take()`` drains them."""

    def __init__(
        self,
        hub: LiveHub,
        key: str,
        field: str | None,
        value: str,
        notify: asyncio.Event,
        incarnation: frozenset[str] | None = None,
    ) -> None:
        self.hub = hub
        self.key = key
        self.field = field
        self.value = value
        self.notify = notify
        self.incarnation = incarnation
        self.entries: deque[Entry] = deque()
        self.closed = False
        # set when it starts at or past the reader's position: what the reader hands on up to
        # there came before the start
        self.floor: tuple[int, int] | None = None

    def push(self, entry: Entry) -> None:
        if not of_incarnation(entry[1], self.incarnation):
            return
        if self.floor is not None:
            if id_order(entry[0]) <= self.floor:
                return
            self.floor = None  # the reader is past the start: no later entry is before it
        self.entries.append(entry)
        self.notify.set()

    def push_gap(self, lost: tuple[int, int]) -> None:
        """Entries up to ``lost`` were trimmed unread (all of them before the start, for a
        subscription that starts later, and so none of its own)."""
        if self.floor is not None and lost <= self.floor:
            return
        if not self.entries or not is_gap(self.entries[-1]):
            self.entries.append(GAP)
        self.notify.set()

    def take(self) -> list[Entry]:
        out = list(self.entries)
        self.entries.clear()
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._leave(self)


class _Feed:
    """One stream's reader position and subscribers, by the value of their filter field (one
    field per stream: ``s`` for live shards, ``session_id`` for lifecycle streams), None for
    subscribers of every entry."""

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        self.field: str | None = None
        self.subs: dict[str | None, set[Subscription]] = {}
        self.count = 0


class _Group:
    """Streams read by one XREAD (all of them on a single Redis; one stream on a Cluster)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class LiveHub:
    def __init__(self, redis: Any, *, cluster: bool) -> None:
        self._redis = redis
        self._cluster = cluster
        self._feeds: dict[str, _Feed] = {}
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._groups: dict[str, _Group] = {}

    # --- subscribers ---------------------------------------------------------------------------
    async def subscribe(
        self,
        key: str,
        *,
        after: str | None = None,
        field: str | None = None,
        value: str = "",
        notify: asyncio.Event | None = None,
        incarnation: frozenset[str] | None = None,
    ) -> Subscription:
        """Entries of ``key`` after ``after`` (an entry id), or from now on when None."""
        feed = await self._feed(key)
        sub = Subscription(self, key, field, value, notify or asyncio.Event(), incarnation)
        if field is not None:
            if feed.field not in (None, field):
                raise ValueError(f"stream {key} is filtered by {feed.field!r}, not {field!r}")
            feed.field = field
        feed.subs.setdefault(value if field else None, set()).add(sub)
        feed.count += 1
        position = feed.cursor
        self._join(key)
        if after is not None and id_order(after) >= id_order(position):
            sub.floor = id_order(after)  # the reader is behind the start
        elif after is not None:
            try:
                backlog = await self._range(key, after, position, sub)
            except BaseException:
                sub.close()
                raise
            sub.entries.extendleft(reversed(backlog))
            if backlog:
                sub.notify.set()
        return sub

    async def position(self, key: str) -> str:
        """The id up to which the reader has handed on entries of ``key`` (about the newest)."""
        return (await self._feed(key)).cursor

    def subscribers(self) -> int:
        return sum(f.count for f in self._feeds.values())

    def _leave(self, sub: Subscription) -> None:
        feed = self._feeds.get(sub.key)
        if feed is None:
            return
        slot = sub.value if sub.field else None
        subs = feed.subs.get(slot)
        if subs is not None and sub in subs:
            subs.discard(sub)
            feed.count -= 1
            if not subs:
                del feed.subs[slot]

    async def _feed(self, key: str) -> _Feed:
        while True:
            feed = self._feeds.get(key)
            if feed is not None:
                return feed
            starting = self._starting.get(key)
            if starting is not None:
                await asyncio.shield(starting)
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._starting[key] = done
            try:
                with store_errors("follow live events"):
                    last = await self._redis.xrevrange(key, count=1)
                self._feeds[key] = _Feed(str(last[0][0]) if last else "0-0")
            finally:
                del self._starting[key]
                done.set_result(None)

    async def _range(self, key: str, after: str, until: str, sub: Subscription) -> list[Entry]:
        out: list[Entry] = []
        start = "(" + after
        with store_errors("follow live events"):
            while True:
                rows = await self._redis.xrange(key, min=start, max=until, count=CATCH_UP_PAGE)
                if start == "(" + after and rows and trimmed_past(after, rows[0][1]):
                    out.append(GAP)  # (only the first row read says it: later pages follow on)
                out += [(str(i), f) for i, f in rows if _matches(sub, f)]
                if len(rows) < CATCH_UP_PAGE:
                    return out
                start = "(" + str(rows[-1][0])

    # --- the reader ----------------------------------------------------------------------------
    def _join(self, key: str) -> None:
        name = key if self._cluster else ""
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group()
        if key not in group.keys:
            group.keys.add(key)
            group.wake.set()
        if group.task is None or group.task.done():
            # a context of its own: not the first subscriber's request (its log ids, its span)
            group.task = asyncio.get_running_loop().create_task(
                self._read(name, group), context=contextvars.Context()
            )

    async def _read(self, name: str, group: _Group) -> None:
        while True:
            for key in [k for k in group.keys if self._feeds[k].count == 0]:
                group.keys.discard(key)
                del self._feeds[key]
            if not group.keys:
                if self._groups.get(name) is group:
                    del self._groups[name]
                return
            group.wake.clear()
            streams = {k: self._feeds[k].cursor for k in group.keys}
            read = asyncio.ensure_future(self._redis.xread(streams, count=BATCH, block=BLOCK_MS))
            wake = asyncio.ensure_future(group.wake.wait())
            try:
                await asyncio.wait({read, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                if not read.done():
                    read.cancel()
                    await asyncio.wait({read})
            if read.cancelled():
                continue
            try:
                reply = read.result()
            except Exception as exc:  # Redis away: subscribers wait, the reader tries again
                log.warning("live reader failed", error=type(exc).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            for key, rows in _streams(reply):
                self._dispatch(key, rows)

    def _dispatch(self, key: str, rows: list[Any]) -> None:
        feed = self._feeds.get(key)
        if feed is None or not rows:
            return
        subs, field = feed.subs, feed.field
        if trimmed_past(feed.cursor, rows[0][1]):
            log.warning("live reader fell behind the live window", stream=key, at=feed.cursor)
            lost = id_order(rows[0][1]["p"])
            for each in subs.values():
                for sub in each:
                    sub.push_gap(lost)
        for entry_id, fields in rows:
            entry = (str(entry_id), fields)
            for sub in subs.get(None, ()):
                sub.push(entry)
            value = fields.get(field) if field is not None else None
            if value is not None:
                for sub in subs.get(value, ()):
                    sub.push(entry)
        feed.cursor = str(rows[-1][0])

    async def close(self) -> None:
        tasks = [g.task for g in self._groups.values() if g.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._groups.clear()


def is_gap(entry: Entry) -> bool:
    return not entry[0]


def trimmed_past(position: str, first: dict[str, str]) -> bool:
    """Whether entries after ``position`` were trimmed before ``first`` (the fields of the
    first entry read after it) was read: the entry before ``first`` comes after the position.
    Entries written before ``p`` existed, and a stream's first entry, say nothing."""
    before = first.get("p")
    return before is not None and before != "" and id_order(before) > id_order(position)


def _matches(sub: Subscription, fields: dict[str, str]) -> bool:
    field_matches = sub.field is None or fields.get(sub.field) == sub.value
    return field_matches and of_incarnation(fields, sub.incarnation)


def incarnation_of(inc: str | None, created: str | None) -> frozenset[str]:
    """The names live entries give a session's incarnation: its ``inc`` (the microsecond it was
    made), and its ``created`` ms, which writers of a version that kept no ``inc`` use (while
    versions are mixed in a rolling upgrade, both write for one session)."""
    return frozenset(name for name in (inc, created) if name)


def of_incarnation(fields: dict[str, str], incarnation: frozenset[str] | None) -> bool:
    """Whether a live entry belongs to the session incarnation named by ``incarnation`` (None:
    any): an entry that names none (written before entries named one) is taken as belonging."""
    named = fields.get("c")
    return incarnation is None or not named or named in incarnation


def _streams(reply: Any) -> Iterable[tuple[str, list[Any]]]:
    """``(key, rows)`` of an XREAD reply: a list of pairs (RESP2) or a dict (RESP3, Cluster)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(str(k), v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(str(k), rows) for k, rows in reply]
