"""Cleanup and retention decisions, pure: durations, filters, max-sessions eviction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidInput
from service.retention import (
    UNIT_SECONDS,
    DurationError,
    Filter,
    SessionFacts,
    age_order,
    format_duration,
    matches,
    parse_duration,
    parse_label,
    parse_labels,
    select_evictions,
)

DAY_MS = 86_400_000
NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400),
     ("1h30m", 5400), (" 7D ", 7 * 86400)],
)  # fmt: skip
def test_parse_duration_examples(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "30", "d", "30x", "-5d", "1.5h", "0s", "0d0h", "3 d", "1h-"])
def test_parse_duration_refuses_with_a_clear_error(bad: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidInput)


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("wdhms")), min_size=1, max_size=5)
)
def test_parse_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    total = sum(n * UNIT_SECONDS[u] for n, u in parts)
    if total == 0:
        with pytest.raises(DurationError):
            parse_duration(text)
    else:
        assert parse_duration(text) == total


@given(st.integers(1, 10**10))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_labels() -> None:
    assert parse_label("env=staging") == ("env", "staging")
    assert parse_label("k=a=b") == ("k", "a=b")
    assert parse_labels(["a=1", "b=2", "a=1"]) == {"a": "1", "b": "2"}
    for bad in ["novalue", "=x", "a b=1"]:
        with pytest.raises(InvalidInput):
            parse_label(bad)
    with pytest.raises(InvalidInput):
        parse_labels(["a=1", "a=2"])


facts_strategy = st.builds(
    SessionFacts,
    session_id=st.text("abcdef0123", min_size=1, max_size=6),
    created_ms=st.integers(NOW - 400 * DAY_MS, NOW),
    modified_ms=st.integers(NOW - 400 * DAY_MS, NOW),
    infinite=st.booleans(),
    labels=st.dictionaries(st.sampled_from("xyz"), st.sampled_from(["1", "2"]), max_size=3),
)
filter_strategy = st.builds(
    Filter,
    older_than=st.none() | st.integers(1, 400 * 86400),
    idle_for=st.none() | st.integers(1, 400 * 86400),
    labels=st.dictionaries(st.sampled_from("xyz"), st.sampled_from(["1", "2"]), max_size=2),
    include_infinite=st.booleans(),
    everything=st.booleans(),
)


@given(facts_strategy, filter_strategy)
def test_matches_is_the_and_of_its_criteria(facts: SessionFacts, filt: Filter) -> None:
    expected = (
        (not facts.infinite or filt.include_infinite)
        and (filt.has_criteria or filt.everything)
        and (filt.older_than is None or NOW - facts.created_ms >= filt.older_than * 1000)
        and (filt.idle_for is None or NOW - facts.modified_ms >= filt.idle_for * 1000)
        and all(facts.labels.get(k) == v for k, v in filt.labels.items())
    )
    assert matches(facts, filt, NOW) is expected


@given(facts_strategy, filter_strategy)
def test_an_infinite_session_needs_include_infinite(facts: SessionFacts, filt: Filter) -> None:
    inf = SessionFacts(facts.session_id, facts.created_ms, facts.modified_ms, infinite=True)
    if not filt.include_infinite:
        assert not matches(inf, filt, NOW)


@given(facts_strategy, filter_strategy)
def test_idle_bound_contains_every_idle_match(facts: SessionFacts, filt: Filter) -> None:
    """Cleanup reads only the index up to ``idle_bound_ms``: no match may lie beyond it."""
    bound = filt.idle_bound_ms(NOW)
    if matches(facts, filt, NOW) and bound is not None:
        assert facts.modified_ms <= bound


def test_no_criteria_selects_nothing_unless_all() -> None:
    old = SessionFacts("a", 0, 0)
    assert not matches(old, Filter(), NOW)
    assert matches(old, Filter(everything=True), NOW)


def test_boundaries() -> None:
    s = SessionFacts("a", created_ms=NOW - DAY_MS, modified_ms=NOW - DAY_MS)
    assert matches(s, Filter(older_than=86400), NOW)
    assert not matches(s, Filter(older_than=86401), NOW)
    assert matches(s, Filter(idle_for=86400), NOW)
    assert not matches(s, Filter(idle_for=86401), NOW)


@given(st.lists(facts_strategy, max_size=40, unique_by=lambda f: f.session_id), st.integers(1, 40))
def test_evictions_oldest_finite_first(sessions: list[SessionFacts], max_sessions: int) -> None:
    evicted = select_evictions(sessions, max_sessions)
    by_id = {f.session_id: f for f in sessions}
    finite = sorted((f for f in sessions if not f.infinite), key=age_order)
    assert all(not by_id[sid].infinite for sid in evicted)
    assert len(evicted) == max(0, len(finite) - max_sessions)
    assert evicted == [f.session_id for f in finite[: len(evicted)]]
    kept = [f for f in finite if f.session_id not in set(evicted)]
    assert len(kept) == min(len(finite), max_sessions)
    if evicted and kept:
        assert max(age_order(by_id[s]) for s in evicted) < min(age_order(f) for f in kept)


def test_evictions_off_or_under_the_limit() -> None:
    sessions = [SessionFacts(f"s{i}", i, i) for i in range(5)]
    assert select_evictions(sessions, None) == []
    assert select_evictions(sessions, 5) == []
    assert select_evictions(sessions, 3) == ["s0", "s1"]
    infinite = [SessionFacts(f"i{i}", 0, 0, infinite=True) for i in range(10)]
    assert select_evictions(infinite + sessions, 3) == ["s0", "s1"]
