"""Cleanup and retention decisions as pure functions: no Redis, no clock, tested with hypothesis.

A session is described by ``SessionFacts`` (what the index and its metadata say); a ``Filter`` says
which sessions an operator or a retention rule wants gone. Every function takes ``now_ms`` as an
argument, so a decision can be replayed exactly.

Rules, in one place:
- ``older_than``: the session was *created* at least that long ago (``now - created >= d``).
- ``idle_for``: the session was last *written* at least that long ago (``now - modified >= d``).
- ``labels``: the session carries every given ``key=value`` pair.
- Filters combine with AND. An infinite session matches only with ``include_infinite``; no
  retention rule ever sets it.
- Max-sessions eviction counts finite sessions only and evicts the least recently modified first
  (ties: by session id), the order of the session index. Infinite sessions are neither counted
  nor evicted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from service.errors import InvalidInput
from service.ids import validate_labels

UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+[wdhms])+")
_PART = re.compile(r"(\d+)([wdhms])")
DURATION_HELP = "a number and a unit, e.g. 30d, 12h, 90m, 45s, 2w, or a sum such as 1h30m"


class DurationError(InvalidInput, ValueError):
    """A duration flag that is not ``<number><unit>...``."""


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What cleanup needs to know about one session."""

    session_id: str
    created_ms: int
    modified_ms: int
    infinite: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    events: int = 0


@dataclass(frozen=True, slots=True)
class Filter:
    """Which sessions to delete; ``None`` switches a criterion off. Durations in seconds."""

    older_than: int | None = None
    idle_for: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    include_infinite: bool = False
    everything: bool = False  # no criterion on purpose (``cleanup --all``)

    @property
    def has_criteria(self) -> bool:
        return self.older_than is not None or self.idle_for is not None or bool(self.labels)

    def idle_bound_ms(self, now_ms: int) -> int | None:
        """The newest ``modified`` a matching session can have (the index range to read)."""
        return None if self.idle_for is None else now_ms - self.idle_for * 1000

    def describe(self) -> dict[str, object]:
        return {
            "older_than": None if self.older_than is None else format_duration(self.older_than),
            "idle_for": None if self.idle_for is None else format_duration(self.idle_for),
            "labels": dict(self.labels),
            "include_infinite": self.include_infinite,
            "all": self.everything,
        }


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or sums such as ``1h30m``) in seconds, > 0."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise DurationError(f"invalid duration {text!r}: use {DURATION_HELP}")
    seconds = sum(int(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    if seconds <= 0:
        raise DurationError(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest ``parse_duration`` spelling of ``seconds`` (``5400`` -> ``1h30m``)."""
    if seconds <= 0:
        return "0s"
    parts: list[str] = []
    rest = seconds
    for unit, size in UNIT_SECONDS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` (the value may be empty or contain ``=``)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"invalid label {text!r}: use key=value")
    validate_labels({key: value})
    return key, value


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, value = parse_label(item)
        if key in out and out[key] != value:
            raise InvalidInput(f"label {key!r} is given twice with different values")
        out[key] = value
    return out


def matches(facts: SessionFacts, filt: Filter, now_ms: int) -> bool:
    """Whether ``filt`` selects this session for deletion at ``now_ms``."""
    if facts.infinite and not filt.include_infinite:
        return False
    if not filt.has_criteria and not filt.everything:
        return False
    if filt.older_than is not None and now_ms - facts.created_ms < filt.older_than * 1000:
        return False
    if filt.idle_for is not None and now_ms - facts.modified_ms < filt.idle_for * 1000:
        return False
    return all(facts.labels.get(k) == v for k, v in filt.labels.items())


def age_order(facts: SessionFacts) -> tuple[int, str]:
    """Eviction order, the session index's own: least recently modified first, then by id."""
    return (facts.modified_ms, facts.session_id)


def eviction_excess(finite_sessions: int, max_sessions: int | None) -> int:
    """How many finite sessions a max-sessions rule must evict."""
    if max_sessions is None:
        return 0
    return max(0, finite_sessions - max_sessions)


def pick_evictions(oldest_first: Iterable[SessionFacts], excess: int) -> list[SessionFacts]:
    """The first ``excess`` finite sessions of a run already sorted by ``age_order``."""
    out: list[SessionFacts] = []
    if excess <= 0:
        return out
    for facts in oldest_first:
        if not facts.infinite:
            out.append(facts)
            if len(out) >= excess:
                break
    return out


def select_evictions(sessions: Iterable[SessionFacts], max_sessions: int | None) -> list[str]:
    """Session ids a max-sessions rule evicts from this whole set, oldest first."""
    ordered = sorted(sessions, key=age_order)
    excess = eviction_excess(sum(1 for f in ordered if not f.infinite), max_sessions)
    return [f.session_id for f in pick_evictions(ordered, excess)]
