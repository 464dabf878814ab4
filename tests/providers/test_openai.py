"""The OpenAI provider against a real local server speaking the Chat Completions wire format."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from service.errors import ProviderError
from tests.providers.conftest import MakeProvider
from tests.providers.fake_openai import FakeOpenAI
from workers.providers.base import ChatMessage, Role, Usage
from workers.providers.openai import OpenAIProvider, completions_url, parse_retry_after
from workers.providers.wire import retry_after_of

MESSAGES = [
    ChatMessage(Role.SYSTEM, "You are terse."),
    ChatMessage(Role.USER, "hello"),
    ChatMessage(Role.ASSISTANT, "hi"),
    ChatMessage(Role.USER, "say something nice"),
]
REPLY = "Echo: say something nice"


class Deltas:
    """An ``on_delta`` callback that records the chunks."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, chunk: str) -> None:
        self.chunks.append(chunk)


async def failure(provider: OpenAIProvider, model: str, *, stream: bool = False) -> ProviderError:
    deltas = Deltas() if stream else None
    with pytest.raises(ProviderError) as caught:
        await provider.complete(MESSAGES, model=model, on_delta=deltas)
    return caught.value


# --- success -------------------------------------------------------------------------------


async def test_completion(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    completion = await make_provider().complete(MESSAGES, model="gpt-test")
    assert completion.content == REPLY
    assert completion.model == "gpt-test"
    assert completion.usage == Usage(prompt_tokens=8, completion_tokens=4)
    assert completion.finish_reason == "stop"


async def test_request_shape(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    await make_provider(api_key="sk-secret").complete(MESSAGES, model="gpt-test")
    [request] = fake_openai.requests
    assert request.method == "POST"
    assert request.target == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-secret"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "say something nice"},
        ],
        "stream": False,
    }


async def test_no_authorization_header_without_key(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    await make_provider().complete(MESSAGES, model="gpt-test")
    assert "authorization" not in fake_openai.requests[0].headers


async def test_streaming(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    deltas = Deltas()
    completion = await make_provider().complete(MESSAGES, model="gpt-test", on_delta=deltas)
    assert deltas.chunks == ["Echo: ", "say ", "something ", "nice"]
    assert completion.content == "".join(deltas.chunks) == REPLY
    assert completion.usage == Usage(prompt_tokens=8, completion_tokens=4)
    assert completion.finish_reason == "stop"
    body = fake_openai.requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]


async def test_usage_is_optional(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    provider = make_provider()
    assert (await provider.complete(MESSAGES, model="no-usage")).usage is None
    streamed = await provider.complete(MESSAGES, model="no-usage", on_delta=Deltas())
    assert streamed.usage is None
    assert streamed.content == REPLY


async def test_body_left_open_after_done(
    fake_openai: FakeOpenAI, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workers.providers.wire.DRAIN_SECONDS", 0.1)
    deltas = Deltas()
    provider = make_provider(timeout_seconds=2.0)
    completion = await provider.complete(MESSAGES, model="done-then-stall", on_delta=deltas)
    assert completion.content == REPLY == "".join(deltas.chunks)


async def test_server_ignoring_stream_flag(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    deltas = Deltas()
    completion = await make_provider().complete(MESSAGES, model="ignore-stream", on_delta=deltas)
    assert deltas.chunks == [REPLY]
    assert completion.content == REPLY


async def test_one_connection_is_reused(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    for _ in range(3):
        await provider.complete(MESSAGES, model="gpt-test")
        await provider.complete(MESSAGES, model="gpt-test", on_delta=Deltas())
    assert len(fake_openai.requests) == 6
    assert {request.connection for request in fake_openai.requests} == {1}


async def test_azure_style_base_url(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    base = f"http://127.0.0.1:{fake_openai.port}/openai/deployments/gpt4o?api-version=2024-06-01"
    await make_provider(base_url=base).complete(MESSAGES, model="gpt-test")
    target = fake_openai.requests[0].target
    assert target == "/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01"


@pytest.mark.parametrize("stream", [False, True])
async def test_finish_reasons(
    fake_openai: FakeOpenAI, make_provider: MakeProvider, stream: bool
) -> None:
    provider = make_provider()
    deltas = Deltas() if stream else None
    cut = await provider.complete(MESSAGES, model="length", on_delta=deltas)
    assert cut.finish_reason == "length"
    assert cut.content == REPLY[: len(REPLY) // 2]
    blocked = await provider.complete(MESSAGES, model="content-filter", on_delta=deltas)
    assert blocked.finish_reason == "content_filter"
    assert blocked.content == ""
    if deltas is not None:
        assert "".join(deltas.chunks) == cut.content


async def test_stream_without_usage_when_the_setting_is_off(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    deltas = Deltas()
    completion = await make_provider(stream_usage=False).complete(
        MESSAGES, model="gpt-test", on_delta=deltas
    )
    assert completion.content == REPLY == "".join(deltas.chunks)
    assert completion.usage is None
    assert completion.finish_reason == "stop"
    assert "stream_options" not in fake_openai.requests[0].body


async def test_endpoint_refusing_stream_options(make_provider: MakeProvider) -> None:
    async with FakeOpenAI(reject_stream_options=True) as server:
        error = await failure(make_provider(base_url=server.base_url), "gpt-test", stream=True)
        assert error.kind == "bad_request"
        assert "stream_options" in error.detail
        assert server.hits["gpt-test"] == 1  # a 400 is not retried
        provider = make_provider(base_url=server.base_url, stream_usage=False)
        deltas = Deltas()
        completion = await provider.complete(MESSAGES, model="gpt-test", on_delta=deltas)
        assert completion.content == REPLY == "".join(deltas.chunks)
        assert (await provider.complete(MESSAGES, model="gpt-test")).usage is not None


@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_its_own_kind(make_provider: MakeProvider, stream: bool) -> None:
    async with FakeOpenAI(context_window=5) as server:
        error = await failure(make_provider(base_url=server.base_url), "gpt-test", stream=stream)
    assert error.kind == "context_length_exceeded"
    assert "maximum context length is 5 tokens" in error.detail
    assert error.extra["status_code"] == 400
    assert error.extra["context_window"] == 5
    assert error.extra["prompt_tokens"] == 8
    assert server.hits["gpt-test"] == 1


async def test_azure_deployments_api_version_and_key(make_provider: MakeProvider) -> None:
    async with FakeOpenAI(api_key="azure-key") as server:
        provider = OpenAIProvider.azure(
            f"http://127.0.0.1:{server.port}",
            "2024-06-01",
            api_key="azure-key",
            deployments={"gpt-4o": "prod-4o"},
            timeout_seconds=5.0,
        )
        try:
            completion = await provider.complete(MESSAGES, model="gpt-4o")
            streamed = await provider.complete(MESSAGES, model="gpt-4o-mini", on_delta=Deltas())
        finally:
            await provider.aclose()
    assert provider.name == "azure"
    assert completion.content == streamed.content == REPLY
    assert completion.model == "prod-4o"  # as the server names it
    first, second = server.requests
    assert first.target == "/openai/deployments/prod-4o/chat/completions?api-version=2024-06-01"
    assert second.target == (
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-06-01"
    )
    assert first.headers["api-key"] == "azure-key"
    assert "authorization" not in first.headers
    assert first.body["model"] == "prod-4o"
    assert second.body["stream_options"] == {"include_usage": True}


async def test_azure_with_an_entra_id_token(fake_openai: FakeOpenAI) -> None:
    issued: list[str] = []

    async def token() -> str:
        issued.append(f"entra-{len(issued)}")
        return issued[-1]

    provider = OpenAIProvider.azure(
        f"http://127.0.0.1:{fake_openai.port}", "2024-10-21", token_provider=token
    )
    try:
        await provider.complete(MESSAGES, model="gpt-4o")
        await provider.complete(MESSAGES, model="gpt-4o", on_delta=Deltas())
    finally:
        await provider.aclose()
    assert [r.headers["authorization"] for r in fake_openai.requests] == [
        "Bearer entra-0",
        "Bearer entra-1",
    ]
    assert all("api-key" not in r.headers for r in fake_openai.requests)
    assert all(r.target.endswith("?api-version=2024-10-21") for r in fake_openai.requests)


async def test_azure_token_failure_is_auth(fake_openai: FakeOpenAI) -> None:
    async def token() -> str:
        raise ProviderError("no Microsoft Entra ID token for Azure OpenAI: refused", kind="auth")

    provider = OpenAIProvider.azure(
        f"http://127.0.0.1:{fake_openai.port}", "2024-10-21", token_provider=token, max_retries=2
    )
    try:
        error = await failure(provider, "gpt-4o", stream=True)
    finally:
        await provider.aclose()
    assert error.kind == "auth"
    assert error.extra["attempts"] == 1
    assert fake_openai.requests == []


def test_azure_needs_a_credential_and_a_version() -> None:
    with pytest.raises(ValueError, match="API key or an Entra ID token"):
        OpenAIProvider.azure("https://res.openai.azure.com", "2024-10-21")
    with pytest.raises(ValueError, match="api-version"):
        OpenAIProvider.azure("https://res.openai.azure.com", "", api_key="k")


def test_completions_url() -> None:
    assert str(completions_url("https://api.openai.com/v1")) == (
        "https://api.openai.com/v1/chat/completions"
    )
    assert str(completions_url("http://localhost:8000/v1/chat/completions")) == (
        "http://localhost:8000/v1/chat/completions"
    )
    with pytest.raises(ValueError, match="http"):
        completions_url("api.openai.com/v1")


# --- retries -------------------------------------------------------------------------------


async def test_500_is_retried_then_reported(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    error = await failure(make_provider(max_retries=2), "fail-500")
    assert error.kind == "server_error"
    assert "The server had an error" in error.detail
    assert error.extra["attempts"] == 3
    assert fake_openai.hits["fail-500"] == 3


async def test_500_then_ok_succeeds(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    deltas = Deltas()
    completion = await make_provider().complete(MESSAGES, model="fail-500-then-ok", on_delta=deltas)
    assert completion.content == REPLY == "".join(deltas.chunks)
    assert fake_openai.hits["fail-500-then-ok"] == 2


async def test_no_retries_when_disabled(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    error = await failure(make_provider(max_retries=0), "fail-500-then-ok")
    assert error.kind == "server_error"
    assert fake_openai.hits["fail-500-then-ok"] == 1


async def test_429_then_ok_honours_retry_after(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake_openai.retry_after = "1"
    started = time.monotonic()
    completion = await make_provider().complete(MESSAGES, model="fail-429-then-ok")
    assert completion.content == REPLY
    assert time.monotonic() - started >= 0.95
    assert fake_openai.hits["fail-429-then-ok"] == 2


async def test_retry_after_is_capped(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake_openai.retry_after = "3600"
    started = time.monotonic()
    provider = make_provider(retry_after_max_seconds=0.05)
    await provider.complete(MESSAGES, model="fail-429-then-ok")
    assert time.monotonic() - started < 1


async def test_429_exhausted_is_rate_limited(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake_openai.retry_after = "0"
    error = await failure(make_provider(max_retries=1), "fail-429")
    assert error.kind == "rate_limited"
    assert error.extra["retry_after"] == 0.0
    assert fake_openai.hits["fail-429"] == 2


async def test_no_retry_past_the_deadline(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake_openai.retry_after = "30"
    started = time.monotonic()
    error = await failure(make_provider(timeout_seconds=2.0), "fail-429")
    assert error.kind == "rate_limited"
    assert time.monotonic() - started < 1
    assert fake_openai.hits["fail-429"] == 1


async def test_dropped_connection_is_retried(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    completion = await make_provider().complete(MESSAGES, model="drop-then-ok")
    assert completion.content == REPLY
    assert fake_openai.hits["drop-then-ok"] == 2
    error = await failure(make_provider(max_retries=1), "drop")
    assert error.kind == "connection"
    assert fake_openai.hits["drop"] == 2


async def test_connection_refused(make_provider: MakeProvider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    error = await failure(provider, "gpt-test", stream=True)
    assert error.kind == "connection"
    assert error.extra["attempts"] == 2
    assert isinstance(error.__cause__, Exception)


# --- failures that are not retried ---------------------------------------------------------


async def test_401_is_auth_without_retry(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    error = await failure(make_provider(), "auth-401", stream=True)
    assert error.kind == "auth"
    assert "Incorrect API key provided" in error.detail
    assert error.extra["status_code"] == 401
    assert fake_openai.hits["auth-401"] == 1


async def test_wrong_key_is_auth(make_provider: MakeProvider) -> None:
    async with FakeOpenAI(api_key="sk-right") as server:
        provider = make_provider(base_url=server.base_url, api_key="sk-wrong")
        assert (await failure(provider, "gpt-test")).kind == "auth"
        good = make_provider(base_url=server.base_url, api_key="sk-right")
        assert (await good.complete(MESSAGES, model="gpt-test")).content == REPLY


async def test_400_is_bad_request_with_server_message(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    error = await failure(make_provider(), "bad-400")
    assert error.kind == "bad_request"
    assert "The model `bad-400` does not exist" in error.detail
    assert fake_openai.hits["bad-400"] == 1


@pytest.mark.parametrize("model", ["garbage-json", "missing-fields"])
async def test_bad_body_is_bad_response(
    fake_openai: FakeOpenAI, make_provider: MakeProvider, model: str
) -> None:
    error = await failure(make_provider(), model)
    assert error.kind == "bad_response"
    assert fake_openai.hits[model] == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_times_out_quickly(
    fake_openai: FakeOpenAI, make_provider: MakeProvider, stream: bool
) -> None:
    started = time.monotonic()
    error = await failure(make_provider(timeout_seconds=0.5), "hang", stream=stream)
    assert error.kind == "timeout"
    assert time.monotonic() - started < 1.5
    assert fake_openai.hits["hang"] == 1


async def test_stalled_stream_times_out_after_first_delta(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    deltas = Deltas()
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await make_provider(timeout_seconds=0.5).complete(
            MESSAGES, model="slow-stream", on_delta=deltas
        )
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 1.5
    assert deltas.chunks == ["Echo: "]
    assert fake_openai.hits["slow-stream"] == 1


async def test_cut_stream_is_not_retried(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    deltas = Deltas()
    with pytest.raises(ProviderError) as caught:
        await make_provider().complete(MESSAGES, model="stream-cut", on_delta=deltas)
    assert caught.value.kind == "connection"
    assert deltas.chunks == ["Echo: ", "say "]
    assert fake_openai.hits["stream-cut"] == 1


async def test_error_event_in_stream(fake_openai: FakeOpenAI, make_provider: MakeProvider) -> None:
    error = await failure(make_provider(), "stream-error", stream=True)
    assert error.kind == "server_error"
    assert "overloaded" in error.detail
    assert fake_openai.hits["stream-error"] == 1


async def test_callback_errors_propagate_unchanged(
    fake_openai: FakeOpenAI, make_provider: MakeProvider
) -> None:
    async def on_delta(chunk: str) -> None:
        raise RuntimeError("store is down")

    with pytest.raises(RuntimeError, match="store is down"):
        await make_provider().complete(MESSAGES, model="gpt-test", on_delta=on_delta)
    assert fake_openai.hits["gpt-test"] == 1


# --- helpers -------------------------------------------------------------------------------


def test_retry_after_of_prefers_milliseconds() -> None:
    assert retry_after_of(httpx.Headers({"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    assert retry_after_of(httpx.Headers({"retry-after": "7"})) == 7.0
    assert retry_after_of(httpx.Headers({"retry-after-ms": "soon", "retry-after": "2"})) == 2.0
    assert retry_after_of(httpx.Headers()) is None


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


async def test_backoff_grows_and_is_capped() -> None:
    async with OpenAIProvider(
        "http://127.0.0.1:1/v1", backoff_base_seconds=1, backoff_max_seconds=4
    ) as provider:
        assert 0.5 <= provider.retry_delay(0) <= 1
        assert 2 <= provider.retry_delay(2) <= 4
        assert 2 <= provider.retry_delay(10) <= 4
        assert provider.retry_delay(0, retry_after=100.0) == 30.0
