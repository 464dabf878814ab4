"""The model-provider plug point: message and completion types, and the ``Provider`` protocol.

A provider turns a conversation (a sequence of ``ChatMessage``) into one ``Completion``. When the
caller passes ``on_delta`` the provider streams: it awaits ``on_delta(chunk)`` for every text chunk
as it arrives and still returns the full completion at the end.

Every failure is raised as ``service.errors.ProviderError`` whose ``kind`` is one of
``ProviderErrorKind``; library exceptions (openai, httpx, json) never escape a provider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    """Who wrote a message, as the Chat Completions wire format names it."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ProviderErrorKind(StrEnum):
    """The ``kind`` of a ``ProviderError``; workers record it with the failed turn."""

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    BAD_RESPONSE = "bad_response"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    CONNECTION = "connection"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # the prompt passed the model's window


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to the model."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        # Accept plain strings ("user") from stored events; keep the field a real Role.
        if not isinstance(self.role, Role):
            object.__setattr__(self, "role", Role(self.role))


@dataclass(frozen=True)
class Usage:
    """Token counts reported (or estimated) for one completion."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """The model's full answer; ``usage`` is None when the provider did not report it.

    ``finish_reason`` is why the model stopped, as the provider says it: ``stop`` (a whole
    answer), ``length`` (cut off at the token limit), ``content_filter`` (withheld by the
    provider's filter), ``tool_calls``; None when the provider did not say."""

    content: str
    model: str
    usage: Usage | None
    finish_reason: str | None = None


DeltaCallback = Callable[[str], Awaitable[None]]
"""Awaited with each streamed text chunk, in order; the chunks join to ``Completion.content``."""


class Provider(Protocol):
    """A chat model. Implementations: ``DevProvider`` (offline) and ``OpenAIProvider``."""

    name: str

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        on_delta: DeltaCallback | None = None,
    ) -> Completion:
        """Answer the conversation; stream through ``on_delta`` when given."""
        ...

    async def aclose(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...
