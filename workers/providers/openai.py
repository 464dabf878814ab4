"""A provider on the official ``openai`` package: OpenAI, Azure OpenAI and compatible servers.

``AsyncOpenAI`` reaches OpenAI and every server that speaks Chat Completions under one base URL
(Ollama ``http://host:11434/v1``, vLLM, llama.cpp's server); a query string on the base URL
(``?api-version=...``) is sent with every request. ``OpenAIProvider.azure`` builds the same
provider on ``AsyncAzureOpenAI``: an endpoint, an ``api-version``, deployments named per model,
and either a key (``api-key`` header) or a Microsoft Entra ID token provider.

Failures become ``ProviderError`` where they enter:

    timeouts (connect, read, the overall deadline)   -> timeout
    connection refused, reset, dropped mid-body      -> connection              retried
    429                                              -> rate_limited            retried, honouring
                                                                                retry-after(-ms)
    5xx                                              -> server_error            retried
    401, 403                                         -> auth
    400 saying the prompt passed the model's window  -> context_length_exceeded with the sizes
    other 4xx                                        -> bad_request             the server's message
    unparsable JSON, missing fields, a cut stream    -> bad_response

Retries are ours, not the SDK's (its ``max_retries`` is 0): exponential backoff with jitter, up to
``max_retries``, and only while no streamed text has reached the caller (a retry would repeat
it). ``timeout_seconds`` bounds every network wait and also the whole call, retries included, and
a retry whose wait would pass that deadline is not started: the caller hears the real error at
once instead of a timeout later. The SDK's retries know nothing of such a deadline (it would
sleep a 30 s ``retry-after`` inside a 2 s budget).

``stream_usage`` sends ``stream_options: {"include_usage": true}`` with streamed calls, so that
streams end with a usage chunk; older Azure api-versions and some servers answer 400 to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from json import JSONDecodeError
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from service.errors import ProviderError
from workers.providers.base import ChatMessage, Completion, DeltaCallback, ProviderErrorKind
from workers.providers.wire import (
    Delivered,
    bad_response,
    error_for_status,
    parse_completion,
    parse_retry_after,
    read_stream,
)

__all__ = ["OpenAIProvider", "completions_url", "parse_retry_after", "request_messages"]

logger = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {ProviderErrorKind.RATE_LIMITED, ProviderErrorKind.SERVER_ERROR, ProviderErrorKind.CONNECTION}
)
TokenProvider = Callable[[], "str | Awaitable[str]"]
"""Returns a Microsoft Entra ID access token for Azure OpenAI (sync or async)."""


class OpenAIProvider:
    """Chat Completions through one SDK client (one connection pool), closed by ``aclose()``."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        stream_usage: bool = True,
        connect_timeout_seconds: float = 10.0,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
        retry_after_max_seconds: float = 30.0,
        _azure: Mapping[str, Any] | None = None,
        _deployments: Mapping[str, str] | None = None,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.url = completions_url(base_url)
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.stream_usage = stream_usage
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.retry_after_max_seconds = retry_after_max_seconds
        self.deployments = dict(_deployments or {})
        # keyless servers (Ollama, llama.cpp) get no Authorization header at all
        self._headers: dict[str, Any] = {}
        if _azure is None and not api_key:
            self._headers["Authorization"] = openai.omit
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                timeout_seconds, connect=min(connect_timeout_seconds, timeout_seconds)
            ),
            transport=transport,
        )
        self._client: openai.AsyncOpenAI
        if _azure is not None:
            self._client = openai.AsyncAzureOpenAI(
                **_azure, timeout=self._http.timeout, max_retries=0, http_client=self._http
            )
        else:
            root = self.url.copy_with(
                path=self.url.path.removesuffix("/chat/completions"), query=None
            )
            self._client = openai.AsyncOpenAI(
                api_key=api_key or "unused",
                base_url=str(root),
                default_query=dict(self.url.params) or None,
                timeout=self._http.timeout,
                max_retries=0,
                http_client=self._http,
            )

        # The SDK imports its resource modules on first use (about a second of CPU): at start-up,
        # not inside the first turn, where it would stall the event loop and eat the deadline.
        self._chat = self._client.chat.completions

    @classmethod
    def azure(
        cls,
        endpoint: str,
        api_version: str,
        *,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
        deployments: Mapping[str, str] | None = None,
        **options: Any,
    ) -> OpenAIProvider:
        """Azure OpenAI: ``{endpoint}/openai/deployments/{deployment}/chat/completions
        ?api-version={api_version}``, the deployment named by ``deployments[model]`` (else the
        model name itself), authenticated by ``api_key`` or an Entra ID ``token_provider``."""
        if not api_key and token_provider is None:
            raise ValueError("Azure OpenAI needs an API key or an Entra ID token provider")
        if not api_version:
            raise ValueError("Azure OpenAI needs an api-version")
        azure = {
            "azure_endpoint": endpoint,
            "api_version": api_version,
            "api_key": api_key or None,
            "azure_ad_token_provider": token_provider,
        }
        provider = cls(
            f"{endpoint.rstrip('/')}/openai?api-version={api_version}",
            _azure=azure,
            _deployments=deployments,
            **options,
        )
        provider.name = "azure"
        return provider

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        on_delta: DeltaCallback | None = None,
    ) -> Completion:
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                return await self._with_retries(messages, model, on_delta, deadline)
        except TimeoutError as exc:
            raise ProviderError(
                f"no answer from {self.url.host} within {self.timeout_seconds:g}s",
                kind=ProviderErrorKind.TIMEOUT.value,
            ) from exc

    async def _with_retries(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        on_delta: DeltaCallback | None,
        deadline: float,
    ) -> Completion:
        loop = asyncio.get_running_loop()
        delivered = Delivered()
        attempt = 0
        while True:
            try:
                return await self._attempt(messages, model, on_delta, delivered)
            except ProviderError as exc:
                exc.extra["attempts"] = attempt + 1
                if attempt >= self.max_retries or delivered.any or exc.kind not in RETRYABLE:
                    raise
                retry_after = exc.extra.get("retry_after")
                delay = self.retry_delay(
                    attempt, retry_after if isinstance(retry_after, float) else None
                )
                if loop.time() + delay >= deadline:
                    raise
                logger.warning(
                    "provider call failed, retrying",
                    extra={
                        "kind": exc.kind,
                        "detail": exc.detail,
                        "attempt": attempt + 1,
                        "delay": round(delay, 3),
                    },
                )
                attempt += 1
                await asyncio.sleep(delay)

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt + 1``: retry-after (capped) or jittered backoff."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max_seconds)
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _attempt(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        on_delta: DeltaCallback | None,
        delivered: Delivered,
    ) -> Completion:
        chat = self._chat
        wire_model = self.deployments.get(model, model)
        try:
            if on_delta is None:
                answer = await chat.create(
                    model=wire_model,
                    messages=request_messages(messages),
                    stream=False,
                    extra_headers=self._headers,
                )
                return parse_completion(answer, model)
            extra: dict[str, Any] = {}
            if self.stream_usage:
                extra["stream_options"] = {"include_usage": True}
            async with chat.with_streaming_response.create(
                model=wire_model,
                messages=request_messages(messages),
                stream=True,
                extra_headers=self._headers,
                **extra,
            ) as response:
                return await read_stream(
                    response.iter_lines(), response.headers, model, on_delta, delivered
                )
        except openai.APIStatusError as exc:
            raise error_for_status(exc) from exc
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise ProviderError(
                f"{_cause_name(exc)} talking to {self.url.host} "
                f"(timeout {self.timeout_seconds:g}s)",
                kind=ProviderErrorKind.TIMEOUT.value,
            ) from exc
        except (openai.APIConnectionError, httpx.TransportError) as exc:
            reason = str(exc.__cause__ or exc)
            raise ProviderError(
                f"{_cause_name(exc)} talking to {self.url.host}{': ' + reason if reason else ''}",
                kind=ProviderErrorKind.CONNECTION.value,
            ) from exc
        except (openai.APIResponseValidationError, httpx.DecodingError, JSONDecodeError) as exc:
            raise bad_response(f"undecodable response from {self.url.host}: {exc}") from exc
        except openai.OpenAIError as exc:  # anything else the SDK raises
            raise ProviderError(
                f"{type(exc).__name__} talking to {self.url.host}: {exc}",
                kind=ProviderErrorKind.BAD_REQUEST.value,
            ) from exc


def completions_url(base_url: str) -> httpx.URL:
    """``{base_url}/chat/completions``, keeping any query string (Azure's ``api-version``)."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"provider base URL must be an http(s) URL, got {base_url!r}")
    path = url.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return url.copy_with(path=path)


def request_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """The ``messages`` of one Chat Completions request."""
    return [
        {"role": m.role.value, "content": m.content}  # type: ignore[misc]
        for m in messages
    ]


def _cause_name(exc: BaseException) -> str:
    """The name of the network error underneath the SDK's wrapper (``ConnectError``...)."""
    return type(exc.__cause__ or exc).__name__
