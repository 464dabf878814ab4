"""Items of storage-only sessions: the app's own model loop appends, reads, pops and clears them.

An item is any JSON object (a Responses-API message, function call, tool output, reasoning
item...), stored unchanged as a history entry of type ``item`` (see ``service.scripts_items``),
so export, bookmarks, live events, TTLs and the index treat it like any other event. Each change
is one script call: concurrent writers on any number of API replicas get one order, with no
retries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.connections import store_errors
from service.errors import Conflict, InvalidInput, PayloadTooLarge
from service.events import CODES
from service.models import AppendResult, EventType, is_message_role
from service.store.base import TenantBase, _event_id, _missing

ITEM_CODE = CODES[EventType.ITEM.value]
MAX_ITEMS_PAGE = 10_000  # items one read returns at most
MAX_BATCH = 1_000  # items one append takes at most
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class ItemPage:
    """Items oldest first, as their stored JSON text, and their ids."""

    ids: list[str]
    items: list[str]

    def json(self) -> bytes:
        """``{"data": [item, ...], "ids": [...]}``, the items spliced in as stored."""
        ids = ",".join(f'"{i}"' for i in self.ids)
        return f'{{"data":[{",".join(self.items)}],"ids":[{ids}]}}'.encode()


def encode_item(item: Mapping[str, Any], max_bytes: int) -> str:
    """The stored body of an item (``i<JSON>``); refuses one over ``max_bytes``."""
    if not isinstance(item, Mapping):
        raise InvalidInput("an item must be a JSON object")
    try:
        data = orjson.dumps(item).decode()
    except (orjson.JSONEncodeError, TypeError):  # integers beyond 64 bits, non-string keys
        try:
            data = _JSON.encode(item)
        except ValueError:  # NaN or Infinity, which orjson would have stored as null
            raise InvalidInput("an item holds NaN or Infinity, which JSON does not have") from None
    size = len(data.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"item of {size} bytes is over the limit of {max_bytes} bytes", limit=max_bytes
        )
    return ITEM_CODE + data


def _data(entry: str) -> str:
    """The item JSON of a history entry ``<ms>i<JSON>``."""
    if entry[13:15] == ITEM_CODE + "{":
        return entry[14:]
    return entry[entry.index("{") :]


def _turns(session_id: str) -> Conflict:
    return Conflict(
        f"session {session_id!r} runs turns; items belong to storage-only sessions "
        '(create one with "mode": "store")',
        session_id=session_id,
    )


class ItemOps(TenantBase):
    """Append, read, pop and clear the items of a storage-only session."""

    async def append_items(
        self,
        session_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        max_item_bytes: int | None = None,
    ) -> AppendResult:
        """Append ``items`` in order, atomically, in one round trip. A repeated
        ``idempotency_key`` stores nothing and returns the first item's id (``duplicate``)."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidInput(f"an append takes 1 to {MAX_BATCH} items (got {len(items)})")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise InvalidInput("Idempotency-Key must be 1-200 characters")
        limit = min(max_item_bytes or self._s.max_event_bytes, self._s.max_event_bytes)
        bodies = [encode_item(item, limit) for item in items]
        messages = sum(1 for item in items if is_message_role(item.get("role")))
        res = await self._run(
            "append_items", session_id, [idempotency_key or "", messages, *bodies], "append items"
        )
        self._check(session_id, res[0])
        if res[0] == "dup":
            return AppendResult(event_ids=[str(res[1])], duplicate=True)
        ids = [str(i) for i in res[3:]]
        if self._s.cluster:
            incarnation = ids.pop()
            await self._publish(session_id, list(zip(ids, bodies, strict=True)), incarnation)
            await self._after_write(session_id, int(res[1]), int(res[2]))
        return AppendResult(event_ids=ids)

    async def read_items(
        self, session_id: str, *, limit: int | None = None, before: str | None = None
    ) -> ItemPage:
        """The newest ``limit`` items (all, up to 10,000, when None) before the item id
        ``before`` (exclusive; None = the newest), oldest first. One round trip."""
        count = MAX_ITEMS_PAGE if limit is None else limit
        if not 1 <= count <= MAX_ITEMS_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_ITEMS_PAGE} (got {limit})")
        keys = self._session_keys(session_id)
        with store_errors("read items"):
            if before is None:
                pipe = self._s.redis.pipeline(transaction=False)
                pipe.hmget(keys.meta, "id", "mode", "hbase")
                pipe.lrange(keys.history, -count, -1)
                pipe.llen(keys.history)
                (sid, mode, base), entries, length = await pipe.execute()
                if sid is None:
                    raise _missing(session_id)
                if mode != "store":
                    raise _turns(session_id)
                first = int(base or 0) + int(length) - len(entries)
            else:
                mode = await self._s.redis.hget(keys.meta, "mode")
                reply = await self._s.scripts["read_history"](
                    keys=[keys.meta, keys.history, keys.events],
                    args=["", self._item_id(before), count, 1],
                )
                if reply[0] == "missing":
                    raise _missing(session_id)
                if mode != "store":  # (a session of the earlier layout runs turns too)
                    raise _turns(session_id)
                first, entries = int(reply[1]), reply[2:]
        fast = ITEM_CODE + "{"
        if all(e[13:15] == fast for e in entries):  # 13 digits of ms (until the year 2286)
            ids = [f"{e[:13]}-{n}" for n, e in enumerate(entries, first)]
            return ItemPage(ids=ids, items=[e[14:] for e in entries])
        ids = [
            f"{e[: len(e) - len(e.lstrip('0123456789'))]}-{n}" for n, e in enumerate(entries, first)
        ]
        return ItemPage(ids=ids, items=[_data(e) for e in entries])

    async def pop_item(self, session_id: str) -> tuple[str, dict[str, Any]] | None:
        """Remove the newest item atomically and return its id and the item; None when the
        session holds none."""
        res = await self._run("pop_item", session_id, [], "pop an item")
        self._check(session_id, res[0])
        popped = None
        if res[0] == "ok":
            popped = str(res[3]), orjson.loads(_data(str(res[4])))
            if self._s.cluster:
                body = EventType.ITEM_POPPED.value + orjson.dumps({"id": popped[0]}).decode()
                await self._publish(session_id, [("", body)], str(res[5]))
        await self._after_write(session_id, int(res[1]), int(res[2]))
        return popped

    async def clear_items(self, session_id: str) -> int:
        """Drop every item (and bookmark); the session, its id, TTL and labels stay. Returns
        the number of items removed."""
        res = await self._run("clear_items", session_id, [], "clear items")
        self._check(session_id, res[0])
        if self._s.cluster:
            body = EventType.ITEMS_CLEARED.value + f'{{"count":{int(res[3])}}}'
            await self._publish(session_id, [("", body)], str(res[4]))
            await self._after_write(session_id, int(res[1]), int(res[2]))
        return int(res[3])

    def _check(self, session_id: str, status: str) -> None:
        if status == "missing":
            raise _missing(session_id)
        if status == "turns":
            raise _turns(session_id)

    @staticmethod
    def _item_id(value: str) -> str:
        """An item id: an event id with its ordinal (``<ms>-<n>``)."""
        if "-" not in value:
            raise InvalidInput(f"{value[:50]!r} is not an item id")
        return _event_id(value)
