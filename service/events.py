"""Rendering stored stream entries as event envelopes, fast.

A stored entry is ``<ms>-<seq>`` with one field ``e`` = ``{"type":...,"data":...}``. The envelope
adds ``id`` (the stream id) and ``timestamp`` (ISO-8601 UTC, from the id's milliseconds). A page
is rendered as ONE JSON array string by splicing the id and timestamp into the stored text, so
the API serves it as is and Python decodes it with a single ``orjson.loads``; nothing is
re-encoded per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

import orjson

from service.models import Event


@lru_cache(maxsize=4096)
def _second(sec: str) -> str:
    return datetime.fromtimestamp(int(sec), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def timestamp_of(event_id: str) -> str:
    """ISO-8601 UTC with milliseconds, from a stream id (``1732246089878-0``)."""
    ms = event_id[: event_id.index("-")] if "-" in event_id else event_id
    ms = ms.rjust(4, "0")
    return f"{_second(ms[:-3])}.{ms[-3:]}Z"


def render_page(rows: Sequence[tuple[str, str]]) -> str:
    """``[(event id, stored JSON), ...]`` -> one JSON array of envelopes."""
    parts = []
    last_ms = ""
    stamp = ""
    for event_id, body in rows:
        ms = event_id[: event_id.index("-")]
        if ms != last_ms:
            last_ms, stamp = ms, timestamp_of(event_id)
        parts.append(f'{{"id":"{event_id}","timestamp":"{stamp}",{body[1:]}')
    return "[" + ",".join(parts) + "]"


def decode_page(page: str) -> list[Event]:
    events: list[Event] = orjson.loads(page)
    return events


def event_from_entry(event_id: str, body: str) -> Event:
    event: Event = orjson.loads(
        f'{{"id":"{event_id}","timestamp":"{timestamp_of(event_id)}",{body[1:]}'
    )
    return event
