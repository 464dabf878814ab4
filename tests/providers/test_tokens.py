from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.providers.base import ChatMessage, Role
from workers.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_messages, estimate_tokens


def test_empty_text_is_zero_tokens() -> None:
    assert estimate_tokens("") == 0


def test_about_four_bytes_per_token() -> None:
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100


def test_every_word_costs_at_least_one_token() -> None:
    assert estimate_tokens("a b c d e f") == 6


def test_multibyte_text_counts_more() -> None:
    assert estimate_tokens("日本語") == 3  # 9 UTF-8 bytes
    assert estimate_tokens("日本語") > estimate_tokens("abc")


@given(st.text(min_size=1))
def test_non_empty_text_is_at_least_one_token(text: str) -> None:
    assert estimate_tokens(text) >= 1


@given(st.text(), st.text())
def test_appending_never_lowers_the_estimate(head: str, tail: str) -> None:
    assert estimate_tokens(head + tail) >= estimate_tokens(head)
    assert estimate_tokens(head + tail) >= estimate_tokens(tail)


@given(st.lists(st.text(), max_size=8))
def test_messages_add_a_per_message_overhead(contents: list[str]) -> None:
    messages = [ChatMessage(Role.USER, c) for c in contents]
    expected = sum(estimate_tokens(c) for c in contents) + MESSAGE_OVERHEAD_TOKENS * len(contents)
    assert estimate_messages(messages) == expected


def test_no_messages_is_zero_tokens() -> None:
    assert estimate_messages([]) == 0
