from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.providers.token_fixtures import CL100K
from workers.providers.base import ChatMessage, Role
from workers.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_messages, estimate_tokens


def test_empty_text_is_zero_tokens() -> None:
    assert estimate_tokens("") == 0


@pytest.mark.parametrize(("kind", "tokens", "text"), CL100K, ids=[k for k, _, _ in CL100K])
def test_estimate_is_near_cl100k(kind: str, tokens: int, text: str) -> None:
    """Within -20%/+20% of the real count for every kind of text, CJK, numbers and ids too."""
    assert 0.8 * tokens <= estimate_tokens(text) <= 1.2 * tokens


def test_estimate_over_all_kinds_errs_a_little_high() -> None:
    real = sum(tokens for _, tokens, _ in CL100K)
    estimated = sum(estimate_tokens(text) for _, _, text in CL100K)
    assert real <= estimated <= 1.1 * real


def test_words_short_and_long() -> None:
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("hello world") == 2
    # 20 letters / 4.5; cl100k knows the word (2): long common words are overcounted
    assert estimate_tokens("internationalization") == 5
    assert estimate_tokens("x" * 400) == 89


def test_every_word_costs_at_least_one_token() -> None:
    assert estimate_tokens("a b c d e f") == 6


def test_digits_count_in_threes() -> None:
    assert estimate_tokens("1234567890") == 4  # 123 456 789 0, as cl100k splits them
    assert estimate_tokens("7") == 1
    # call, " ", 555, " ", 019, 9: a space before a number is its own token (cl100k: 6)
    assert estimate_tokens("call 555 0199") == 6


def test_ids_and_base64_count_by_their_case_changes_and_digits() -> None:
    assert estimate_tokens("550e8400-e29b-41d4-a716-446655440000") == 18  # cl100k: 18
    assert estimate_tokens("aGVsbG8gd29ybGQ=") >= 10  # cl100k: 11; bytes/4 said 4


def test_cjk_counts_about_one_token_per_character() -> None:
    assert estimate_tokens("日本語") == 4  # cl100k: 4
    assert estimate_tokens("日本語") > estimate_tokens("abc")
    assert estimate_tokens("这是一个测试") == 7  # 6 x 1.15; cl100k merges common words (4)


def test_a_mark_between_letters_joins_the_word() -> None:
    assert estimate_tokens("x.append") == estimate_tokens("x append") == 2
    assert estimate_tokens("user_id") == 2


def test_long_texts_are_estimated_once() -> None:
    text = "A long message about databases and caching. " * 50
    assert estimate_tokens(text) == estimate_tokens(str(text)) == estimate_tokens(text + "")
    assert estimate_tokens(text) < estimate_tokens(text + " more")


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
