"""The dev model: deterministic and offline, for local runs and tests.

Its replies show which context it was given, so that history, compaction and titles can be checked
end to end without a real model. Same messages in, same reply out. Three modes, chosen by the
system messages:

* Title (a system message starts with ``Write a short title``): the first user prompt's first six
  words, first letter capitalized, no trailing punctuation, at most 60 characters.
* Summary (the first system message starts with ``Summarize``)::

      Earlier: <previous summary>. Then the user asked: 1) "<prompt>"; 2) "<prompt>".

  The ``Earlier:`` part appears only when the input holds a previous summary; the user prompts may
  be given as user messages or as ``user: ...`` lines of a transcript.
* Chat (anything else)::

      You said: "<latest prompt>". Earlier you asked: "<p1>"; "<p2>". From the summary of our
      earlier conversation: <summary>. (dev model, <n> messages in context)

  or, when the latest prompt asks what was discussed ("what did we discuss", "what were we
  discussing", ...)::

      We discussed: (from the summary) <summary>; then "<p1>"; "<p2>". You now ask: "<latest>".

Summaries are system messages starting with ``Summary of earlier conversation:``. Earlier prompts
are shortened to about 60 characters, the latest to 200. Streaming sends the reply word by word
(each chunk keeps its trailing spaces), sleeping ``stream_delay_ms`` between words.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import Sequence

from workers.providers.base import ChatMessage, Completion, DeltaCallback, Role, Usage
from workers.tokens import estimate_messages, estimate_tokens

SUMMARY_PREFIX = "Summary of earlier conversation:"
SUMMARIZE_PREFIX = "Summarize"
TITLE_PREFIX = "Write a short title"

PROMPT_CHARS = 60
LATEST_PROMPT_CHARS = 200
TITLE_WORDS = 6
TITLE_CHARS = 60
DEFAULT_TITLE = "New conversation"

_RECALL = re.compile(
    r"what\s+(?:were|was|have|had)\s+we\s+(?:been\s+)?(?:discussing|discussed|talking\s+about)"
    r"|what\s+did\s+we\s+(?:discuss|talk\s+about)",
    re.IGNORECASE,
)
_TRANSCRIPT_USER = re.compile(r"^\s*user\s*:\s*(.*\S)\s*$", re.IGNORECASE)
_TRANSCRIPT_SUMMARY = re.compile(
    r"^\s*(?:system\s*:\s*)?" + re.escape(SUMMARY_PREFIX) + r"\s*(.*\S)\s*$", re.IGNORECASE
)
_WORD_CHUNK = re.compile(r"\S+\s*|\s+")


class DevProvider:
    """Offline provider whose reply echoes the conversation it saw (see the module docstring)."""

    name = "dev"

    def __init__(self, stream_delay_ms: int = 0) -> None:
        if stream_delay_ms < 0:
            raise ValueError("stream_delay_ms must be >= 0")
        self.stream_delay_ms = stream_delay_ms

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        on_delta: DeltaCallback | None = None,
    ) -> Completion:
        reply = reply_for(messages)
        if on_delta is not None:
            for index, chunk in enumerate(stream_chunks(reply)):
                if index and self.stream_delay_ms > 0:
                    await asyncio.sleep(self.stream_delay_ms / 1000)
                await on_delta(chunk)
        usage = Usage(
            prompt_tokens=estimate_messages(messages), completion_tokens=estimate_tokens(reply)
        )
        return Completion(content=reply, model=model, usage=usage, finish_reason="stop")

    async def aclose(self) -> None:
        return None


def reply_for(messages: Sequence[ChatMessage]) -> str:
    """The dev model's deterministic reply to ``messages``."""
    systems = [m.content for m in messages if m.role is Role.SYSTEM]
    if any(s.lstrip().startswith(TITLE_PREFIX) for s in systems):
        return title_reply(messages)
    if systems and systems[0].lstrip().startswith(SUMMARIZE_PREFIX):
        return summary_reply(messages)
    return chat_reply(messages)


def stream_chunks(reply: str) -> list[str]:
    """The reply split into words, each keeping the whitespace after it; they join to ``reply``."""
    return _WORD_CHUNK.findall(reply)


def chat_reply(messages: Sequence[ChatMessage]) -> str:
    """Reply quoting the latest prompt, listing earlier prompts and any summary."""
    prompts = [m.content for m in messages if m.role is Role.USER]
    summary = _summaries(messages)
    if not prompts:
        return f"Hello from the dev model. ({_context_note(messages)})"
    latest = _shorten(prompts[-1], LATEST_PROMPT_CHARS)
    earlier = "; ".join(f'"{_shorten(p, PROMPT_CHARS)}"' for p in prompts[:-1])
    if _RECALL.search(prompts[-1]):
        parts = []
        if summary:
            parts.append(f"(from the summary) {summary}")
        if earlier:
            parts.append(earlier)
        if not parts:
            parts.append("nothing yet, this is the start of our conversation")
        return f'We discussed: {"; then ".join(parts)}. You now ask: "{latest}".'
    reply = f'You said: "{latest}".'
    if earlier:
        reply += f" Earlier you asked: {earlier}."
    if summary:
        reply += f" From the summary of our earlier conversation: {summary}."
    return f"{reply} ({_context_note(messages)})"


def summary_reply(messages: Sequence[ChatMessage]) -> str:
    """A compact summary listing every user prompt seen, after any previous summary."""
    conversation = list(messages)
    first_system = next(i for i, m in enumerate(conversation) if m.role is Role.SYSTEM)
    del conversation[first_system]
    previous: list[str] = []
    prompts: list[str] = []
    for message in conversation:
        if message.role is Role.SYSTEM and message.content.startswith(SUMMARY_PREFIX):
            previous.append(_strip_summary(message.content))
        elif message.role is Role.USER:
            found_summaries, found_prompts = _parse_transcript(message.content)
            previous.extend(found_summaries)
            prompts.extend(found_prompts)
    listed = "; ".join(f'{i}) "{_shorten(p, PROMPT_CHARS)}"' for i, p in enumerate(prompts, 1))
    parts = []
    if previous:
        parts.append(f"Earlier: {' '.join(previous).rstrip('.')}.")
    if listed:
        parts.append(f"{'Then the user' if previous else 'The user'} asked: {listed}.")
    return " ".join(parts) or "Nothing to summarize."


def title_reply(messages: Sequence[ChatMessage]) -> str:
    """The first user prompt's first six words, capitalized, without trailing punctuation."""
    first = next((m.content for m in messages if m.role is Role.USER), "")
    _, prompts = _parse_transcript(first)
    words = (prompts[0] if prompts else "").split()[:TITLE_WORDS]
    title = _strip_trailing(" ".join(words))
    if len(title) > TITLE_CHARS:
        cut = title[:TITLE_CHARS]
        title = _strip_trailing(cut.rsplit(" ", 1)[0] if " " in cut else cut)
    if not title:
        return DEFAULT_TITLE
    return title[0].upper() + title[1:]


def _summaries(messages: Sequence[ChatMessage]) -> str:
    """The content of every compaction summary in the messages, joined."""
    found = [
        _strip_summary(m.content)
        for m in messages
        if m.role is Role.SYSTEM and m.content.startswith(SUMMARY_PREFIX)
    ]
    return " ".join(s for s in found if s)


def _parse_transcript(content: str) -> tuple[list[str], list[str]]:
    """Summaries and user prompts of a message; a plain message is one prompt."""
    summaries: list[str] = []
    prompts: list[str] = []
    for line in content.splitlines():
        if match := _TRANSCRIPT_SUMMARY.match(line):
            summaries.append(match.group(1).rstrip("."))
        elif match := _TRANSCRIPT_USER.match(line):
            prompts.append(match.group(1))
    if not summaries and not prompts and content.strip():
        prompts.append(content)
    return summaries, prompts


def _strip_summary(content: str) -> str:
    return " ".join(content[len(SUMMARY_PREFIX) :].split()).rstrip(".")


def _shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with a trailing ``...``."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 3].rstrip() + "..."


def _strip_trailing(text: str) -> str:
    return text.rstrip(string.punctuation + string.whitespace)


def _context_note(messages: Sequence[ChatMessage]) -> str:
    count = len(messages)
    return f"dev model, {count} message{'' if count == 1 else 's'} in context"
