"""Model providers behind one ``Provider`` protocol, chosen by ``Settings.provider``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.providers.base import (
    ChatMessage,
    Completion,
    DeltaCallback,
    Provider,
    ProviderErrorKind,
    Role,
    Usage,
)
from workers.providers.dev import DevProvider
from workers.providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "PROVIDER_NAMES",
    "ChatMessage",
    "Completion",
    "DeltaCallback",
    "DevProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderErrorKind",
    "Role",
    "Usage",
    "build_provider",
]

PROVIDER_NAMES = ("dev", "openai")


def build_provider(settings: Settings) -> Provider:
    """The provider named by ``settings.provider`` (``dev`` or ``openai``), configured."""
    name = settings.provider.strip().lower()
    if name == DevProvider.name:
        return DevProvider(stream_delay_ms=settings.dev_stream_delay_ms)
    if name == OpenAIProvider.name:
        key = settings.openai_api_key
        return OpenAIProvider(
            base_url=settings.openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_seconds=settings.provider_timeout_seconds,
            max_retries=settings.provider_max_retries,
        )
    known = ", ".join(PROVIDER_NAMES)
    raise ValueError(f"unknown model provider {settings.provider!r}; expected one of: {known}")
