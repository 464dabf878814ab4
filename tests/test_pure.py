"""Pure decisions, no Redis: id rules, key building, cursors and shard merging."""

from __future__ import annotations

import string

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import keys as K
from service.errors import InvalidInput
from service.events import decode_history, history_id, messages_from_history
from service.ids import validate_labels, validate_session_id, validate_tenant_id
from service.models import messages_from_events
from service.paging import ShardPage, decode_cursor, encode_cursor, merge_shards

SAFE = string.ascii_letters + string.digits + "._-"


@given(st.text(min_size=0, max_size=200))
def test_session_id_accepts_exactly_the_safe_set(value: str) -> None:
    ok = (
        1 <= len(value) <= 128
        and all(c in SAFE for c in value)
        and value[0].isascii()
        and value[0].isalnum()
    )
    if ok:
        assert validate_session_id(value) == value
    else:
        with pytest.raises(InvalidInput):
            validate_session_id(value)


@given(st.text(alphabet=SAFE, min_size=1, max_size=128).filter(lambda s: s[0].isalnum()))
def test_session_keys_stay_in_tenant_and_share_one_tag(sid: str) -> None:
    keys = K.session_keys("p", "acme", sid).all()
    for key in keys:
        assert key.startswith("p:acme:")
        assert key.count("{") == 1 and key.count("}") == 1
        assert key[key.index("{") + 1 : key.index("}")] == f"acme/{sid}"


@given(st.text(max_size=60))
def test_tenant_ids(value: str) -> None:
    try:
        validate_tenant_id(value)
    except InvalidInput:
        assert (
            not value
            or len(value) > 40
            or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in value)
            or value[0] == "-"
        )
    else:
        assert value and not any(c in value for c in "{}*?:/ ")


@pytest.mark.parametrize("bad", [None, [], {"": "x"}, {"a b": "x"}, {"k": 1}, {"k": "v" * 300}])
def test_bad_labels(bad: object) -> None:
    with pytest.raises(InvalidInput):
        validate_labels(bad)


@given(st.integers(min_value=0, max_value=2**53), st.text(alphabet=SAFE, max_size=128))
def test_cursor_roundtrip(score: int, member: str) -> None:
    assert decode_cursor(encode_cursor(str(score), member)) == (str(score), member)


@pytest.mark.parametrize("bad", ["x", "bm90IGpzb24", encode_cursor("1", "a")[:-3] + "%%%"])
def test_bad_cursor(bad: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(bad)


entries = st.lists(
    st.tuples(st.integers(0, 50), st.text(alphabet="abcdef", min_size=1, max_size=3)),
    unique=True,
    max_size=40,
)


def shard_page(
    all_entries: list[tuple[str, str]],
    cursor: str | None,
    count: int,
    budget: int,
) -> ShardPage:
    """A model of what the LIST_PAGE script returns for one shard."""
    start = decode_cursor(cursor)
    ordered = sorted(all_entries, key=lambda e: (float(e[0]), e[1]), reverse=True)
    rest = [e for e in ordered if (float(e[0]), e[1]) < (float(start[0]), start[1])]
    chunk = rest[: min(count, budget)]
    exhausted = len(chunk) == len(rest)
    frontier = chunk[-1] if chunk else start
    return ShardPage(chunk, exhausted, frontier)


@given(st.lists(entries, min_size=1, max_size=4), st.integers(1, 7), st.integers(1, 5))
def test_merge_shards_walks_everything_in_order(
    shards: list[list[tuple[int, str]]], count: int, budget: int
) -> None:
    data = [[(str(s), m) for s, m in shard] for shard in shards]
    # members are unique per shard; make them unique across shards too
    data = [[(s, f"{m}{i}") for s, m in shard] for i, shard in enumerate(data)]
    expected = sorted(
        (e for shard in data for e in shard), key=lambda e: (float(e[0]), e[1]), reverse=True
    )
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    for _ in range(1000):
        pages = [shard_page(shard, cursor, count, budget) for shard in data]
        taken, cursor = merge_shards(pages, count)
        assert len(taken) <= count
        seen += taken
        if cursor is None:
            break
    assert seen == expected


_CONTENT = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.lists(st.fixed_dictionaries({"type": st.just("input_text"), "text": st.text(max_size=5)})),
)
_DATA = st.one_of(
    st.fixed_dictionaries({"content": _CONTENT}),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "tool", "system"])}),
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool"]), "content": _CONTENT}
    ),
    st.fixed_dictionaries({"message": st.text(max_size=10)}),
)
_ITEM = st.tuples(
    st.integers(min_value=0, max_value=2 * 10**14),  # ms of any length, 13 digits the usual
    st.sampled_from(["u", "a", "e", "c", "x", "i", "session.custom"]),
    _DATA,
).map(lambda t: f"{t[0]}{t[1]}{orjson.dumps(t[2]).decode()}")


@given(st.integers(min_value=0, max_value=10**6), st.lists(_ITEM, max_size=30))
def test_messages_straight_from_history_are_those_of_the_envelopes(
    first: int, items: list[str]
) -> None:
    """The fast read of a conversation builds exactly what decoding every envelope builds."""
    events = decode_history(first, items)
    assert messages_from_history(first, items) == messages_from_events(events)
    assert [history_id(n, item) for n, item in enumerate(items, first)] == [e["id"] for e in events]
