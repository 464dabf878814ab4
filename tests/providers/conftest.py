"""Fixtures of the provider tests: a fake OpenAI-compatible server and providers aimed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.providers.fake_openai import FakeOpenAI
from workers.providers.openai import OpenAIProvider

MakeProvider = Callable[..., OpenAIProvider]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server
    assert not server.errors, f"the fake server failed: {server.errors!r}"


@pytest.fixture
async def make_provider(fake_openai: FakeOpenAI) -> AsyncIterator[MakeProvider]:
    """Build providers for the fake server (short timeouts and backoff); all closed afterwards."""
    made: list[OpenAIProvider] = []

    def make(**options: Any) -> OpenAIProvider:
        options.setdefault("base_url", fake_openai.base_url)
        options.setdefault("timeout_seconds", 5.0)
        options.setdefault("max_retries", 2)
        options.setdefault("backoff_base_seconds", 0.01)
        provider = OpenAIProvider(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
