"""Cursor paging over the sharded session index: pure functions, tested without Redis.

The index orders sessions by (modified ms, session id), newest first. A cursor is the last
(score, member) a page returned, written ``<score>~<member>`` (``CURSOR_PATTERN``: the OpenAPI
document states it, and any string matching it is a position to continue after); the next page
holds entries strictly after it in that order. With
several index shards, each shard returns a sorted run and its frontier (the last entry it examined);
``merge_shards`` keeps the order exact across shards without skipping anything a shard has not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.errors import InvalidInput

START = ("+inf", "")
# A score as Redis writes it (and parses it back): Python's float() also takes "nan", " 5",
# "1_0", which Redis refuses, so a tampered cursor must not get that far.
_SCORE_PATTERN = r"[+-]?(inf|[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)"
_MEMBER_PATTERN = r"[A-Za-z0-9._-]{0,128}"  # a session id, or "" before the first
CURSOR_PATTERN = f"^{_SCORE_PATTERN}~{_MEMBER_PATTERN}$"
CURSOR_MAX = 1000
_CURSOR = re.compile(CURSOR_PATTERN[1:-1])


@dataclass(frozen=True, slots=True)
class ShardPage:
    entries: list[tuple[str, str]]  # (score, member), newest first
    exhausted: bool  # nothing left after ``frontier`` in this shard
    frontier: tuple[str, str]  # last (score, member) examined


def sort_key(entry: tuple[str, str]) -> tuple[float, str]:
    return (float(entry[0]), entry[1])


def encode_cursor(score: str, member: str) -> str:
    return f"{score}~{member}"


def decode_cursor(cursor: str | None) -> tuple[str, str]:
    if cursor is None:
        return START
    if not isinstance(cursor, str) or len(cursor) > CURSOR_MAX or not _CURSOR.fullmatch(cursor):
        raise InvalidInput(f"cursor {str(cursor)[:40]!r} is not a cursor this service issued")
    score, _, member = cursor.partition("~")
    return score, member


def merge_shards(pages: list[ShardPage], count: int) -> tuple[list[tuple[str, str]], str | None]:
    """Merge shard runs into one page of at most ``count`` entries and the next cursor.

    A shard that stopped early (not exhausted) bounds the page: entries older than its frontier
    might be preceded by ones it has not read yet, so they wait for the next page.
    """
    open_frontiers = [p.frontier for p in pages if not p.exhausted]
    bound = max(open_frontiers, key=sort_key) if open_frontiers else None
    merged = sorted((e for p in pages for e in p.entries), key=sort_key, reverse=True)
    if bound is not None:
        merged = [e for e in merged if sort_key(e) >= sort_key(bound)]
    taken = merged[:count]
    if len(taken) == count and (len(merged) > count or bound is not None):
        return taken, encode_cursor(*taken[-1])
    if bound is not None:
        return taken, encode_cursor(*bound)
    return taken, None
