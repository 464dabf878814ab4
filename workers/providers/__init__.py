"""Model providers behind one ``Provider`` protocol, chosen by ``Settings.provider``.

``OpenAIProvider`` is imported on first use: the ``openai`` package takes a second or two of CPU
to load, which a worker on the dev model (tests, ``sessionctl dev``) need not pay at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.errors import ProviderError
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

if TYPE_CHECKING:
    from service.config import Settings
    from workers.providers.openai import OpenAIProvider, TokenProvider

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

PROVIDER_NAMES = ("dev", "openai", "azure")


def __getattr__(name: str) -> Any:
    if name == "OpenAIProvider":
        from workers.providers.openai import OpenAIProvider

        return OpenAIProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"


def build_provider(settings: Settings) -> Provider:
    """The provider ``settings.provider`` names (``dev``, ``openai`` or ``azure``), configured."""
    name = settings.provider.strip().lower()
    if name == DevProvider.name:
        return DevProvider(stream_delay_ms=settings.dev_stream_delay_ms)
    key = settings.openai_api_key
    api_key = key.get_secret_value() if key is not None else None
    options: dict[str, Any] = {
        "timeout_seconds": settings.provider_timeout_seconds,
        "max_retries": settings.provider_max_retries,
        "stream_usage": settings.provider_stream_usage,
    }
    from workers.providers.openai import OpenAIProvider

    if name == "openai":
        return OpenAIProvider(base_url=settings.openai_base_url, api_key=api_key, **options)
    if name == "azure":
        if not settings.azure_endpoint:
            raise ValueError("provider azure needs SESSIONS_AZURE_ENDPOINT")
        return OpenAIProvider.azure(
            settings.azure_endpoint,
            settings.azure_api_version,
            api_key=None if settings.azure_entra_id else api_key,
            token_provider=entra_token_provider() if settings.azure_entra_id else None,
            deployments=settings.deployments(),
            **options,
        )
    known = ", ".join(PROVIDER_NAMES)
    raise ValueError(f"unknown model provider {settings.provider!r}; expected one of: {known}")


def entra_token_provider() -> TokenProvider:
    """Microsoft Entra ID tokens for Azure OpenAI from azure-identity's ``DefaultAzureCredential``
    (managed identity, workload identity, environment, Azure CLI), refreshed as they expire."""
    try:
        from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
    except ImportError as exc:
        raise ValueError(
            "SESSIONS_AZURE_ENTRA_ID needs the azure-identity package: "
            "pip install 'redis-sessions[azure]'"
        ) from exc
    fetch = get_bearer_token_provider(DefaultAzureCredential(), ENTRA_SCOPE)

    async def token() -> str:
        try:
            return str(await fetch())
        except Exception as exc:  # azure-identity's own errors: no credential, refused
            raise ProviderError(
                f"no Microsoft Entra ID token for Azure OpenAI: {exc}",
                kind=ProviderErrorKind.AUTH.value,
            ) from exc

    return token
