"""Live events of a session: following them (SSE, ``send_and_wait``) through the process's one
reader (``service.store.hub``), and reading what the live window still holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from service import keys as K
from service.connections import store_errors
from service.errors import StoreUnavailable
from service.events import LIVE_MARK, live_event
from service.ids import id_order, validate_stream_id
from service.models import Event, EventType
from service.store.base import TenantBase, _missing
from service.store.hub import Entry, Subscription, incarnation_of, of_incarnation

START = "0-0"
LIVE_CATCH_UP_MS = 5_000  # how far back a stream from a history position follows the live window
START_SLACK_MS = 50  # how much later than its session's created ms a session.start is looked for
COPY_SLACK_MS = 1_000  # how much later than its event a durable event's copy is looked for
MAX_SEQ = 2**64 - 1  # the highest sequence number of a stream id
COPY_FIRST, COPY_PAGE, COPY_PAGES = 1_000, 100, 6  # ... in pages (up to 1,000 + 2,500 entries)


@dataclass
class Following:
    """A session's live events from a cursor. ``replay_after`` is set when the cursor is a
    history position: the caller first serves the durable history after it, then the live
    entries (skipping copies of durable events already served). ``resync`` is set when the
    cursor is neither a history id nor within the live window: the caller tells the client to
    re-read history, then serves live entries from now on."""

    sub: Subscription
    replay_after: str | None = None
    resync: bool = False
    lifecycle: Subscription | None = field(default=None)
    # with ``replay_after``, on a single Redis: the durable event whose live copy ``sub`` starts
    # after, when the window held it. The replay ends there; every event since, durable or not,
    # is among the live entries, in order (the copy is written in the same script as its event).
    # On a Cluster copies are published apart from their events, so the replay reads on to the
    # end and the live entries' copies of what it served are passed over.
    copy_of: str | None = None

    def close(self) -> None:
        self.sub.close()
        if self.lifecycle is not None:
            self.lifecycle.close()


class LiveOps(TenantBase):
    """Following a session's live events, and reading its live window."""

    async def trim_live_window(self, now_ms: int) -> int:
        """Drop every live entry older than the window, exactly (see the ``trim_live`` script:
        a content-free marker may stand in for the newest); returns how many went. Writes trim
        as they go, by whole stream nodes: a tenant that writes nothing more (or whose sessions
        were deleted) keeps its last entries until this runs (from the sweep)."""
        start = max(0, now_ms - self._s.live_window_ms)
        trim = self._s.scripts["trim_live"]
        dropped, failed = 0, None
        for shard in range(self._s.live_shards):
            key = K.live_key(self._s.prefix, self.tenant_id, shard)
            try:
                with store_errors("trim the live window"):
                    dropped += int(await trim(keys=[key], args=[start]))
            except StoreUnavailable as exc:  # the other shards are trimmed all the same
                failed = exc
        if failed is not None:
            raise failed
        return dropped

    async def follow(
        self,
        session_id: str,
        cursor: str | None,
        notify: asyncio.Event | None = None,
        *,
        from_now: bool = False,
    ) -> Following:
        """Live events of ``session_id`` after ``cursor``: ``L<live id>`` (what an SSE ``id:``
        line of a live event carries) resumes there while the live window holds it; a history
        id (or None, the start) resumes after that event: from the live window when it holds
        the event's copy from the last few seconds (single Redis), else the history is replayed
        first; a bare live id (what a transient event's ``id`` was before it carried the ``L``)
        resumes too; anything else resyncs.
        ``from_now``: only what comes next."""
        key = self._live_key(session_id)
        hub = self._s.hub
        # the session's incarnation: live entries of an earlier session of the same id, which
        # the shared live window may still hold, are not this one's
        newest, inc, created = await self.get_meta_fields(
            session_id, "last_event_id", "inc", "created"
        )
        incarnation = incarnation_of(inc, created)

        async def subscribe(after: str | None = None) -> Subscription:
            return await hub.subscribe(
                key,
                after=after,
                field="s",
                value=session_id,
                notify=notify,
                incarnation=incarnation,
            )

        if from_now:
            return Following(await subscribe())
        live = cursor is not None and cursor.startswith(LIVE_MARK)
        start = validate_stream_id(cursor[1:] if live else cursor) if cursor else START
        if not live and id_order(start) == (0, 0):
            start = START  # "0", as "0-0": the start
        if live or (start != START and not await self._in_history(session_id, start)):
            if await self._live_entry_of(key, session_id, start, incarnation):
                return Following(await subscribe(start))
            return Following(await subscribe(), resync=True)
        if not self._s.cluster:
            # On a single Redis an event's live copy is written with it: while the window
            # holds the copy of the cursor's event (or the session's start), the live entries
            # after it are the session's events since, in order, with the transient ones
            # (deltas, turn markers) that a replay of the history cannot give.
            if start == START:
                at = await self._start_entry(key, session_id, created, incarnation)
            else:
                at = await self._copy_of(key, session_id, start, incarnation)
            # only a short catch-up: it reads every session's entries of the shard since
            if (
                at is not None
                and id_order(await hub.position(key))[0] - id_order(at)[0] <= LIVE_CATCH_UP_MS
            ):
                sub = await subscribe(at)
                # still there, so the catch-up read everything after it (a trim removes the
                # oldest entries first); else the window moved past it meanwhile: replay
                if await self._live_entry_of(key, session_id, at, None):
                    return Following(sub)
                sub.close()
        # Live entries from the copy of the newest durable event on (what came after it,
        # transient events included), else from now; the caller skips copies it replayed.
        after = await self._copy_of(key, session_id, newest, incarnation) if newest else None
        return Following(
            await subscribe(after),
            replay_after=start,
            copy_of=newest if after and not self._s.cluster else None,
        )

    async def _start_entry(
        self, key: str, session_id: str, created: str | None, incarnation: frozenset[str]
    ) -> str | None:
        """The id of the session's ``session.start`` live entry (its first, written in the ms
        it was created), while the live window holds it."""
        if not created:
            return None
        ms = int(created)
        with store_errors("follow live events"):
            rows = await self._s.redis.xrange(
                key, min=f"{max(ms - 1, 0)}-0", max=f"{ms + START_SLACK_MS}", count=1000
            )
        for entry_id, fields in rows:
            if fields.get("s") == session_id and of_incarnation(fields, incarnation):
                if fields.get("e", "").startswith(EventType.SESSION_START.value):
                    return str(entry_id)
                return None  # its start is gone from the window
        return None

    async def _copy_of(
        self, key: str, session_id: str, newest: str, incarnation: frozenset[str]
    ) -> str | None:
        """The live id of the copy of the session's newest durable event, while the live window
        holds it. On a single Redis the copy is written in the same script: in the same ms, or
        later when the script ran past a millisecond before writing it (Redis < 7.2 gives
        ``XADD *`` the clock of the moment, not the script's); on a Cluster by the call after it.
        The event's own ms is read first; then up to ``COPY_SLACK_MS`` after it, in pages that
        double from ``COPY_PAGE``. On a single Redis copies come in the order of their events'
        ids, so a later event's copy ends the look."""
        order = id_order(newest)  # history ids grow with each write (a pop's reuse an ordinal)
        ms = order[0]
        low, high = f"{max(ms - 1, 0)}-0", f"{ms}-{MAX_SEQ}"
        count, slack = COPY_FIRST, False
        for _ in range(COPY_PAGES):
            with store_errors("follow live events"):
                rows = await self._s.redis.xrange(key, min=low, max=high, count=count)
            for entry_id, fields in rows:
                if fields.get("s") != session_id or not of_incarnation(fields, incarnation):
                    continue
                copied = fields.get("h")
                if copied == newest:
                    return str(entry_id)
                if copied and not self._s.cluster and id_order(copied) > order:
                    return None  # a later event's copy: this one's is gone
            if len(rows) == count:
                low = f"({rows[-1][0]}"
                if slack:
                    count = min(2 * count, COPY_FIRST)
            elif slack:
                return None
            else:  # its own ms read: on to the slack after it
                low, high = f"({ms}-{MAX_SEQ}", f"{ms + COPY_SLACK_MS}-{MAX_SEQ}"
                count, slack = COPY_PAGE, True
        return None

    async def _live_entry_of(
        self, key: str, session_id: str, entry_id: str, incarnation: frozenset[str] | None
    ) -> bool:
        with store_errors("follow live events"):
            rows = await self._s.redis.xrange(key, min=entry_id, max=entry_id, count=1)
        return (
            bool(rows)
            and rows[0][1].get("s") == session_id
            and of_incarnation(rows[0][1], incarnation)
        )

    async def _in_history(self, session_id: str, event_id: str) -> bool:
        keys = self._session_keys(session_id)
        with store_errors("read events"):
            found = await self._s.scripts["history_at"](
                keys=[keys.meta, keys.history], args=[event_id]
            )
        return bool(int(found))

    async def live_events(self, session_id: str) -> list[Event]:
        """What the live window still holds of the session (transient events and copies of
        durable ones), oldest first: for tests and inspection; clients follow the stream."""
        inc, created = await self.get_meta_fields(session_id, "inc", "created")
        if created is None:
            raise _missing(session_id)
        incarnation = incarnation_of(inc, created)
        key = self._live_key(session_id)
        with store_errors("read live events"):
            rows = await self._s.redis.xrange(key, min="-", max="+")
        return [
            entry_event(str(i), f)
            for i, f in rows
            if f.get("s") == session_id and of_incarnation(f, incarnation)
        ]


def entry_event(live_id: str, fields: dict[str, str]) -> Event:
    return live_event(live_id, fields.get("h", ""), fields.get("e", "{}"))


def entry_parts(entry: Entry) -> tuple[str, str, str]:
    """``(live id, history id or '', body)`` of a live entry."""
    live_id, fields = entry
    return live_id, fields.get("h", ""), fields.get("e", "{}")
