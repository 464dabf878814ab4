"""Stored events and their envelopes, fast.

Durable history items are ``<ms><code><data JSON>`` (see ``service.scripts``); an item's id is
``<ms>-<n>`` (``n`` its ordinal). Live entries carry ``<code><data JSON>`` in their field ``e``.
The envelope adds ``id``, ``timestamp`` (ISO-8601 UTC, from the id's milliseconds) and ``type``
(from the code). A page is rendered as ONE JSON array string by splicing these into the stored
text, so the API serves it as is and Python decodes it with a single ``orjson.loads``; nothing is
re-encoded per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

import orjson

from service.models import MESSAGE_ROLES, Event, EventType, Message, is_message_role, item_text

# Durable event types and their one-letter codes (the Lua prelude's CODES table says the same).
CODES = {
    EventType.USER_MESSAGE.value: "u",
    EventType.ASSISTANT_MESSAGE.value: "a",
    EventType.SESSION_ERROR.value: "e",
    EventType.SESSION_COMPACTION_COMPLETE.value: "c",
    EventType.ABORT.value: "x",
    EventType.ITEM.value: "i",
}
# Events that matter only while a turn is live: never written to the history. Every other type
# (the ones above, and any the service adds later) is durable.
TRANSIENT_TYPES = frozenset(
    {
        EventType.SESSION_START.value,
        EventType.ASSISTANT_TURN_START.value,
        EventType.ASSISTANT_MESSAGE_DELTA.value,
        EventType.ASSISTANT_TURN_END.value,
        EventType.ASSISTANT_USAGE.value,
        EventType.SESSION_IDLE.value,
        EventType.SESSION_TITLE_CHANGED.value,
        EventType.SESSION_COMPACTION_START.value,
        EventType.ITEM_POPPED.value,
        EventType.ITEMS_CLEARED.value,
    }
)
TYPES = {code: f'"type":"{t}"' for t, code in CODES.items()}
NAMES = {code: t for t, code in CODES.items()}
_MESSAGE_CODES = {CODES[t]: role for t, role in MESSAGE_ROLES.items()}
_DIGITS = "0123456789"
LIVE_MARK = "L"  # a transient event's id, and the SSE cursor of a live entry: L<live id>


@lru_cache(maxsize=4096)
def _second(sec: str) -> str:
    return datetime.fromtimestamp(int(sec), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


@lru_cache(maxsize=65536)
def _stamp(ms: str) -> str:
    return timestamp_of(ms)


def timestamp_of(event_id: str) -> str:
    """ISO-8601 UTC with milliseconds, from an id (``1732246089878-0``) or a ms count."""
    ms = event_id[: event_id.index("-")] if "-" in event_id else event_id
    ms = ms.rjust(4, "0")
    return f"{_second(ms[:-3])}.{ms[-3:]}Z"


def encode_body(event_type: str, data_json: str) -> str:
    """``<code><data>``: the stored form of an event without its time."""
    return CODES.get(event_type, event_type) + data_json


def _type_field(head: str) -> str:
    known = TYPES.get(head)
    return known if known is not None else f'"type":{orjson.dumps(head).decode()}'


def _envelope(event_id: str, stamp: str, body: str) -> str:
    brace = body.index("{")
    return (
        f'{{"id":"{event_id}","timestamp":"{stamp}",{_type_field(body[:brace])},'
        f'"data":{body[brace:]}}}'
    )


def render_history(first: int, items: Sequence[str]) -> str:
    """History items (the first has ordinal ``first``) -> one JSON array of envelopes."""
    return _render(range(first, first + len(items)), items)


def render_history_reversed(last: int, items: Sequence[str]) -> str:
    """History items newest first (the last of them has ordinal ``last``) -> one JSON array."""
    top = last + len(items) - 1
    return _render(range(top, top - len(items), -1), items)


def _render(ordinals: Iterable[int], items: Sequence[str]) -> str:
    parts: list[str] = []
    append = parts.append
    stamps: dict[str, str] = {}
    types = TYPES
    for n, item in zip(ordinals, items, strict=True):
        # the usual item: 13 digits of ms (until the year 2286) and a one-letter code
        if item[14:15] == "{" and item[12:13].isdigit() and (kind := types.get(item[13])):
            ms, data = item[:13], item[14:]
        else:
            ms, code, data = _split(item)
            kind = types.get(code) or _type_field(code)
        stamp = stamps.get(ms)
        if stamp is None:
            stamp = stamps[ms] = _stamp(ms)
        append(f'{{"id":"{ms}-{n}","timestamp":"{stamp}",{kind},"data":{data}}}')
    return "[" + ",".join(parts) + "]"


def decode_history(first: int, items: Sequence[str]) -> list[Event]:
    """History items (the first has ordinal ``first``) -> envelopes, without building the
    page's JSON text: each item's data is decoded on its own."""
    out: list[Event] = []
    append = out.append
    stamps: dict[str, str] = {}
    names = NAMES
    loads = orjson.loads
    for n, item in enumerate(items, first):
        if item[14:15] == "{" and item[12:13].isdigit() and (kind := names.get(item[13])):
            ms, data = item[:13], item[14:]
        else:
            ms, code, data = _split(item)
            kind = names.get(code) or code
        stamp = stamps.get(ms)
        if stamp is None:
            stamp = stamps[ms] = _stamp(ms)
        append({"id": f"{ms}-{n}", "timestamp": stamp, "type": kind, "data": loads(data)})
    return out


def messages_from_history(first: int, items: Sequence[str]) -> list[Message]:
    """The user and assistant messages among history items (the first has ordinal ``first``),
    built straight from the stored text: only a message's data is decoded, and no envelope is
    made for it or for any other event (what ``messages_from_events`` does with envelopes)."""
    out: list[Message] = []
    append = out.append
    stamps: dict[str, str] = {}
    roles = _MESSAGE_CODES
    item_code = CODES[EventType.ITEM.value]
    loads = orjson.loads
    for n, item in enumerate(items, first):
        if item[14:15] == "{" and item[12:13].isdigit():
            ms, code, data = item[:13], item[13], item[14:]
        else:
            ms, code, data = _split(item)
        role = roles.get(code)
        if role is not None:
            content = loads(data).get("content", "")
        elif code == item_code:
            body = loads(data)
            role = body.get("role")
            if not is_message_role(role):
                continue
            content = item_text(body.get("content", ""))
        else:
            continue
        stamp = stamps.get(ms)
        if stamp is None:
            stamp = stamps[ms] = _stamp(ms)
        append(Message(role, content if type(content) is str else str(content), f"{ms}-{n}", stamp))
    return out


def history_id(ordinal: int, item: str) -> str:
    """The id of the history item ``item`` whose ordinal is ``ordinal``."""
    return f"{_split(item)[0]}-{ordinal}"


def _split(item: str) -> tuple[str, str, str]:
    """A history item's ms, type code and data JSON, whatever their lengths."""
    brace = item.index("{")
    head = item[:brace]
    code = head.lstrip(_DIGITS)
    return head[: len(head) - len(code)], code, item[brace:]


def live_event(live_id: str, history_id: str, body: str) -> Event:
    """The envelope of a live entry (see ``live_json``)."""
    event: Event = orjson.loads(live_json(live_id, history_id, body))
    return event


def live_json(live_id: str, history_id: str, body: str) -> str:
    """The envelope of a live entry as JSON text (what an SSE frame carries): a durable event's
    copy keeps its history id; a transient event's id is ``L<live id>``, its SSE cursor, which
    no history id can equal (both are ``<ms>-<n>`` numbers from different counters)."""
    if history_id:
        return _envelope(history_id, timestamp_of(history_id), body)
    return _envelope(LIVE_MARK + live_id, timestamp_of(live_id), body)
