"""A provider speaking the OpenAI Chat Completions wire format over httpx.

``POST {base_url}/chat/completions`` with ``model``, ``messages`` and ``stream``. That is all the
major servers share, so one base URL (plus an optional key) reaches OpenAI, Azure OpenAI
(``.../openai/deployments/<name>?api-version=...``), Ollama (``http://host:11434/v1``), vLLM and
llama.cpp's server.

Failures become ``ProviderError`` where they enter:

    httpx.TimeoutException, overall deadline    -> timeout
    httpx transport errors (connect, reset)     -> connection      retried
    429                                         -> rate_limited    retried, honouring Retry-After
    5xx                                         -> server_error    retried
    401, 403                                    -> auth
    other 4xx                                   -> bad_request     with the server's message
    unparsable JSON, missing fields             -> bad_response

Retries use exponential backoff with jitter, up to ``max_retries``, and only while no streamed
text has reached the caller (a retry would repeat it). ``timeout_seconds`` bounds every network
wait (connect, read, write) and also the whole call, retries included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from service.errors import ProviderError
from workers.providers.base import ChatMessage, Completion, DeltaCallback, ProviderErrorKind, Usage

logger = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {ProviderErrorKind.RATE_LIMITED, ProviderErrorKind.SERVER_ERROR, ProviderErrorKind.CONNECTION}
)
_MESSAGE_CHARS = 300
_DRAIN_SECONDS = 1.0


class OpenAIProvider:
    """Chat Completions client; one ``httpx.AsyncClient`` per provider, closed by ``aclose()``."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        connect_timeout_seconds: float = 10.0,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
        retry_after_max_seconds: float = 30.0,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.url = completions_url(base_url)
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.retry_after_max_seconds = retry_after_max_seconds
        self._client = httpx.AsyncClient(
            headers=_headers(self.url, api_key),
            timeout=httpx.Timeout(
                timeout_seconds, connect=min(connect_timeout_seconds, timeout_seconds)
            ),
            transport=transport,
        )

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        on_delta: DeltaCallback | None = None,
    ) -> Completion:
        body = request_body(messages, model=model, stream=on_delta is not None)
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                return await self._with_retries(body, model, on_delta, deadline)
        except TimeoutError as exc:
            raise ProviderError(
                f"no answer from {self.url.host} within {self.timeout_seconds:g}s",
                kind=ProviderErrorKind.TIMEOUT.value,
            ) from exc

    async def _with_retries(
        self,
        body: dict[str, Any],
        model: str,
        on_delta: DeltaCallback | None,
        deadline: float,
    ) -> Completion:
        loop = asyncio.get_running_loop()
        delivered = _Delivered()
        attempt = 0
        while True:
            try:
                return await self._attempt(body, model, on_delta, delivered)
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
        """Seconds before retry ``attempt + 1``: Retry-After (capped) or jittered backoff."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max_seconds)
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _attempt(
        self,
        body: dict[str, Any],
        model: str,
        on_delta: DeltaCallback | None,
        delivered: _Delivered,
    ) -> Completion:
        try:
            if on_delta is None:
                response = await self._client.post(self.url, json=body)
                if not response.is_success:
                    raise error_for_response(response)
                return parse_completion(_json(response.content), model)
            async with self._client.stream("POST", self.url, json=body) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_for_response(response)
                return await _read_stream(response, model, on_delta, delivered)
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"{type(exc).__name__} talking to {self.url.host} "
                f"(timeout {self.timeout_seconds:g}s)",
                kind=ProviderErrorKind.TIMEOUT.value,
            ) from exc
        except httpx.DecodingError as exc:
            raise _bad_response(f"undecodable response body: {exc}") from exc
        except httpx.HTTPError as exc:
            reason = f": {exc}" if str(exc) else ""
            raise ProviderError(
                f"{type(exc).__name__} talking to {self.url.host}{reason}",
                kind=ProviderErrorKind.CONNECTION.value,
            ) from exc


class _Delivered:
    """Whether any streamed text reached the caller (after which a retry is no longer safe)."""

    def __init__(self) -> None:
        self.any = False


def completions_url(base_url: str) -> httpx.URL:
    """``{base_url}/chat/completions``, keeping any query string (Azure's ``api-version``)."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"provider base URL must be an http(s) URL, got {base_url!r}")
    path = url.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return url.copy_with(path=path)


def request_body(messages: Sequence[ChatMessage], *, model: str, stream: bool) -> dict[str, Any]:
    """The JSON body of one Chat Completions request."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role.value, "content": m.content} for m in messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def parse_completion(payload: Any, model: str) -> Completion:
    """A non-streaming response: ``choices[0].message.content``, ``model`` and ``usage``."""
    if not isinstance(payload, dict):
        raise _bad_response("response is not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad_response("response has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise _bad_response("response has no choices[0].message.content text")
    return Completion(
        content=content, model=_model_of(payload, model), usage=parse_usage(payload.get("usage"))
    )


def parse_usage(value: Any) -> Usage | None:
    """``usage`` when it holds integer ``prompt_tokens`` and ``completion_tokens``, else None."""
    if not isinstance(value, dict):
        return None
    prompt, completion = _count(value.get("prompt_tokens")), _count(value.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def error_for_response(response: httpx.Response) -> ProviderError:
    """The ``ProviderError`` for a non-2xx response (its body must have been read)."""
    status = response.status_code
    detail = f"{response.url.host} answered {status} {response.reason_phrase}".rstrip()
    message = error_message(response.content)
    if message:
        detail += f": {message}"
    if status in (401, 403):
        kind = ProviderErrorKind.AUTH
    elif status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return ProviderError(
            detail,
            kind=ProviderErrorKind.RATE_LIMITED.value,
            status_code=status,
            retry_after=retry_after,
        )
    elif 400 <= status < 500:
        kind = ProviderErrorKind.BAD_REQUEST
    elif status >= 500:
        kind = ProviderErrorKind.SERVER_ERROR
    else:
        kind = ProviderErrorKind.BAD_RESPONSE
    return ProviderError(detail, kind=kind.value, status_code=status)


def error_message(content: bytes) -> str:
    """The server's own error text: ``{"error": {"message": ...}}``, ``{"error": "..."}``, or
    a short plain-text body."""
    try:
        payload = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        return text[:_MESSAGE_CHARS] if text and not text.startswith("<") else ""
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail"))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            return error[:_MESSAGE_CHARS]
    return ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


async def _read_stream(
    response: httpx.Response, model: str, on_delta: DeltaCallback, delivered: _Delivered
) -> Completion:
    """Read an SSE stream of ``chat.completion.chunk`` objects up to ``data: [DONE]``."""
    if "json" in response.headers.get("content-type", ""):
        # The server ignored "stream": true and sent one JSON completion.
        await response.aread()
        completion = parse_completion(_json(response.content), model)
        if completion.content:
            delivered.any = True
            await on_delta(completion.content)
        return completion
    parts: list[str] = []
    usage: Usage | None = None
    model_name = model
    ended = False
    async with contextlib.aclosing(_sse_data(response)) as events:
        async for data in events:
            if data == "[DONE]":
                ended = True
                await _drain(events)
                break
            chunk = _json(data.encode())
            if not isinstance(chunk, dict):
                raise _bad_response("stream chunk is not a JSON object")
            if "error" in chunk:
                message = error_message(data.encode()) or "unknown error"
                raise ProviderError(
                    f"error inside the stream: {message}",
                    kind=ProviderErrorKind.SERVER_ERROR.value,
                )
            model_name = _model_of(chunk, model_name)
            usage = parse_usage(chunk.get("usage")) or usage
            for text, finished in _choice_deltas(chunk):
                ended = ended or finished
                if text:
                    parts.append(text)
                    delivered.any = True
                    await on_delta(text)
    if not ended:
        raise _bad_response("stream ended before [DONE]")
    return Completion(content="".join(parts), model=model_name, usage=usage)


async def _drain(events: AsyncGenerator[str, None]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body) so that the connection
    goes back to the pool; a server that keeps the body open is cut off after a moment."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in events:
                pass


def _choice_deltas(chunk: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(choices[0].delta.content, finished)`` of a chunk; the usage chunk has no choices."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _bad_response("stream chunk choices is not a list")
    found: list[tuple[str, bool]] = []
    for choice in choices:
        if not isinstance(choice, dict):
            raise _bad_response("stream chunk choice is not an object")
        if choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        if text is not None and not isinstance(text, str):
            raise _bad_response("stream delta content is not text")
        found.append((text or "", bool(choice.get("finish_reason"))))
    return found


async def _sse_data(response: httpx.Response) -> AsyncGenerator[str, None]:
    """The payload of every ``data:`` line of a server-sent-events body.

    Each line is its own event: the servers we speak to put one JSON object per ``data:`` line,
    and some omit the blank line between events.
    """
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise _bad_response(f"invalid JSON from the provider: {exc}") from exc


def _model_of(payload: dict[str, Any], default: str) -> str:
    model = payload.get("model")
    return model if isinstance(model, str) and model else default


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _bad_response(detail: str) -> ProviderError:
    return ProviderError(detail, kind=ProviderErrorKind.BAD_RESPONSE.value)


def _headers(url: httpx.URL, api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json, text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
        if url.host.endswith(".azure.com"):
            headers["api-key"] = api_key  # Azure OpenAI's own key header
    return headers
