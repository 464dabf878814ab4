"""Offline token estimation, used for context budgeting when no tokenizer is at hand.

The estimate follows how BPE tokenizers of the cl100k family split text before merging: runs
of letters, runs of digits, runs of punctuation and whitespace, each costing at least one token.

    letters, Latin       1 for up to 6 letters, else 1 per 4.5 letters; a run that changes
                         case inside (``aGVsbG``, as in ids and base64) 1 + 1.3 per change
    letters, other       per character: Han 1.15, Hangul 1.05, kana 1, Indic 1.4, Arabic 0.85,
                         Hebrew 0.7, Greek 0.6, Cyrillic 0.45, accented Latin 1 (+ the Latin part)
    digits               1 per 3 digits (``1234567890`` is 4); a space before a number is its own
    punctuation          1 per 2 ASCII characters, 1 per other symbol (2 beyond the BMP: emoji);
                         one mark between letters (``x.append``, ``user_id``) joins the word
    whitespace           a single space joins the next word; other runs 1

A text's estimate is the sum, rounded up: 0 only for the empty string, at least 1 for any other
text, and monotone: appending text never lowers it. Measured against OpenAI's cl100k_base on
hand-written samples (the fixtures in tests/providers/test_tokens.py) it lands within -20%/+20%
for English, code, JSON, Markdown, Chinese, Japanese, Korean, Russian, French, Arabic, Hindi,
numbers, UUIDs, hex, base64 and API keys (English prose about +15%, German compounds about -20%),
where bytes/4 undercounted Chinese by 30%, digits by half and base64 by two thirds. Other
tokenizers differ: a session's estimate is calibrated by the prompt tokens its provider reports
(``workers/budget.py``).

A conversation adds ``MESSAGE_OVERHEAD_TOKENS`` per message for the role and framing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations; keeps this module free of import cycles
    from workers.providers.base import ChatMessage

MESSAGE_OVERHEAD_TOKENS = 4
WORD_LETTERS = 6  # Latin letters one token covers whole
LETTERS_PER_TOKEN = 4.5  # in longer Latin words
CASE_CHANGE_TOKENS = 1.3  # per change of case inside a run of letters
DIGITS_PER_TOKEN = 3
PUNCTUATION_PER_TOKEN = 2
CACHED_FROM = 16  # characters: shorter texts are estimated each time
CACHED_ESTIMATES = 65_536  # about 6 MB
_estimates: dict[int, int] = {}

_PIECE = re.compile(
    r"(?P<letters>[^\W\d_]+)|(?P<digits>\d+)|(?P<space>\s+)|(?P<other>(?:[^\w\s]|_)+)"
)
_CASE_CHANGE = re.compile(r"(?=[a-z][A-Z]|[A-Z][a-z])")
# (first code point past the range, tokens per character), in order
_SCRIPTS = (
    (0x0250, 1.0),  # accented Latin
    (0x0370, 1.0),
    (0x0400, 0.6),  # Greek
    (0x0530, 0.45),  # Cyrillic
    (0x0600, 0.7),  # Armenian, Hebrew
    (0x0700, 0.85),  # Arabic
    (0x0900, 1.0),
    (0x0E00, 1.4),  # Indic scripts
    (0x0E80, 0.9),  # Thai
    (0x3040, 1.0),  # Hangul jamo and the rest
    (0x3100, 1.0),  # kana
    (0x3400, 1.0),
    (0xA000, 1.15),  # Han
    (0xAC00, 1.0),
    (0xD7B0, 1.05),  # Hangul syllables
    (0x10000, 1.0),
)


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text`` (see the module docstring for the rules).

    About 0.4 µs per character (a 400-message context of 150 characters each: some 25 ms); a
    turn estimates the same history messages as the turn before, so estimates are kept, by the
    text's hash rather than the text (a collision of two 64-bit hashes would cost only a slightly
    wrong estimate)."""
    if len(text) < CACHED_FROM:
        return _estimate(text)
    key = hash(text)
    found = _estimates.get(key)
    if found is None:
        if len(_estimates) >= CACHED_ESTIMATES:
            _estimates.clear()
        found = _estimates[key] = _estimate(text)
    return found


def _estimate(text: str) -> int:
    if not text:
        return 0
    pieces = [(m.lastgroup, m.group()) for m in _PIECE.finditer(text)]
    total = 0.0
    last = len(pieces) - 1
    for i, (kind, piece) in enumerate(pieces):
        after = pieces[i + 1][0] if i < last else None
        if kind == "letters":
            total += _letters(piece)
        elif kind == "digits":
            total += math.ceil(len(piece) / DIGITS_PER_TOKEN)
        elif kind == "space":
            total += (piece != " ") + (after == "digits")
        elif len(piece) == 1 and piece.isascii() and after == "letters" and not _spaced(pieces, i):
            continue  # ".append", "_id": the mark joins the word
        else:
            total += _symbols(piece)
    return max(math.ceil(total), 1)


def estimate_messages(messages: Sequence[ChatMessage]) -> int:
    """Estimated prompt tokens of a conversation: content plus a per-message overhead."""
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def _spaced(pieces: list[tuple[str | None, str]], index: int) -> bool:
    return index > 0 and pieces[index - 1][0] == "space"


def _letters(run: str) -> float:
    if run.isascii():
        return _latin(run)
    latin = "".join(c for c in run if c.isascii())
    cost = sum(_script(c) for c in run if not c.isascii())
    return max(cost + (_latin(latin) if latin else 0.0), 1.0)


def _latin(run: str) -> float:
    size = len(run)
    base = 1.0 if size <= WORD_LETTERS else size / LETTERS_PER_TOKEN
    if run.islower() or run.isupper():
        return base
    changes = len(_CASE_CHANGE.findall(run))
    if run[0].isupper() and size > 1 and run[1].islower():
        changes -= 1  # a capital first letter is no change
    return max(base, 1 + CASE_CHANGE_TOKENS * changes)


def _symbols(run: str) -> float:
    plain = sum(1 for c in run if c.isascii())
    other = sum(1 if ord(c) < 0x10000 else 2 for c in run if not c.isascii())
    return math.ceil(plain / PUNCTUATION_PER_TOKEN) + other


@lru_cache(maxsize=4096)
def _script(char: str) -> float:
    code = ord(char)
    for end, tokens in _SCRIPTS:
        if code < end:
            return tokens
    return 2.0  # beyond the BMP: rare Han, historic scripts
