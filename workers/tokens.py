"""Offline token estimation, used for context budgeting when no tokenizer is at hand.

The heuristic: a token is about four bytes of UTF-8 text, and every whitespace-separated word
costs at least one token, so

    estimate_tokens(text) = max(ceil(utf8_bytes / 4), words)

It is 0 only for the empty string, at least 1 for any other text, and monotone: appending text
never lowers the estimate (both the byte count and the word count only grow). Non-Latin scripts
take more bytes per character and so count more tokens, which errs on the safe side.

A conversation adds ``MESSAGE_OVERHEAD_TOKENS`` per message for the role and framing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations; keeps this module free of import cycles
    from workers.providers.base import ChatMessage

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ``max(ceil(utf8_bytes / 4), words)``."""
    if not text:
        return 0
    size = len(text.encode("utf-8"))
    by_bytes = -(-size // BYTES_PER_TOKEN)
    return max(by_bytes, len(text.split()), 1)


def estimate_messages(messages: Sequence[ChatMessage]) -> int:
    """Estimated prompt tokens of a conversation: content plus a per-message overhead."""
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)
