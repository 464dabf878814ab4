from __future__ import annotations

import pytest
from pydantic import SecretStr

import workers.providers
from service.config import Settings
from workers.providers import DevProvider, OpenAIProvider, build_provider


def test_public_names() -> None:
    assert set(workers.providers.__all__) == {
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
    }


async def test_builds_the_dev_provider() -> None:
    provider = build_provider(Settings(provider="dev", dev_stream_delay_ms=7))
    assert isinstance(provider, DevProvider)
    assert provider.name == "dev"
    assert provider.stream_delay_ms == 7
    await provider.aclose()


async def test_builds_the_openai_provider() -> None:
    settings = Settings(
        provider="OpenAI",
        openai_base_url="http://127.0.0.1:11434/v1/",
        openai_api_key=SecretStr("sk-test"),
        provider_timeout_seconds=12,
        provider_max_retries=4,
    )
    provider = build_provider(settings)
    try:
        assert isinstance(provider, OpenAIProvider)
        assert provider.name == "openai"
        assert str(provider.url) == "http://127.0.0.1:11434/v1/chat/completions"
        assert provider.timeout_seconds == 12
        assert provider.max_retries == 4
        assert provider.stream_usage is True
    finally:
        await provider.aclose()


async def test_builds_the_azure_provider() -> None:
    settings = Settings(
        provider="azure",
        azure_endpoint="https://res.openai.azure.com/",
        azure_api_version="2024-06-01",
        azure_deployments="gpt-4o=prod-4o",
        openai_api_key=SecretStr("azure-key"),
        provider_stream_usage=False,
    )
    provider = build_provider(settings)
    try:
        assert isinstance(provider, OpenAIProvider)
        assert provider.name == "azure"
        assert provider.url.host == "res.openai.azure.com"
        assert provider.deployments == {"gpt-4o": "prod-4o"}
        assert provider.stream_usage is False
    finally:
        await provider.aclose()


def test_azure_needs_an_endpoint_and_a_credential() -> None:
    with pytest.raises(ValueError, match="SESSIONS_AZURE_ENDPOINT"):
        build_provider(Settings(provider="azure", openai_api_key=SecretStr("k")))
    with pytest.raises(ValueError, match="API key or an Entra ID token"):
        build_provider(Settings(provider="azure", azure_endpoint="https://res.openai.azure.com"))


def test_entra_id_without_azure_identity_is_a_clear_error() -> None:
    try:
        import azure.identity  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("azure-identity is installed")
    settings = Settings(
        provider="azure", azure_endpoint="https://res.openai.azure.com", azure_entra_id=True
    )
    with pytest.raises(ValueError, match=r"azure-identity.*redis-sessions\[azure\]"):
        build_provider(settings)


def test_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown model provider 'claude'.*dev, openai, azure"):
        build_provider(Settings(provider="claude"))
