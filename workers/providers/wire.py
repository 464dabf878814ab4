"""Reading what a Chat Completions server answers: completions, SSE streams and errors.

The ``openai`` package sends the requests; this module turns its answers into our types
(``Completion``, ``Usage``) and its failures into ``ProviderError`` (see ``openai.py`` for the
table of kinds). Streams are read here, line by line, rather than through the SDK's own stream
object, for three things it does not do: tell a stream cut before ``data: [DONE]`` from a whole
one, read past ``[DONE]`` to the end of the body so the connection goes back to the pool, and
accept a server that ignores ``"stream": true`` and answers with one JSON completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from service.errors import ProviderError
from workers.providers.base import Completion, DeltaCallback, ProviderErrorKind, Usage

_MESSAGE_CHARS = 300
DRAIN_SECONDS = 1.0

# "This model's maximum context length is 8192 tokens. However, your messages resulted in
# 9000 tokens." (OpenAI, Azure, vLLM: "you requested 9000 tokens"); llama.cpp says
# "the request exceeds the available context size" with n_ctx / n_prompt_tokens fields.
_OVERFLOW_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_OVERFLOW_TEXT = re.compile(
    r"maximum context length|context (?:length|size|window)|too many tokens", re.I
)
_WINDOW_TEXT = re.compile(r"maximum context length is (\d+)", re.I)
_PROMPT_TEXT = re.compile(r"(?:resulted in|you requested|requested) (\d+) tokens", re.I)


class Delivered:
    """Whether any streamed text reached the caller (after which a retry is no longer safe)."""

    def __init__(self) -> None:
        self.any = False


# --- completions ------------------------------------------------------------------------------


def parse_completion(payload: ChatCompletion, model: str) -> Completion:
    """A non-streamed answer: ``choices[0].message.content``, ``finish_reason``, ``usage``."""
    choices = getattr(payload, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise bad_response("response has no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    if content is None and getattr(choice, "finish_reason", None) == "content_filter":
        content = ""  # Azure blocks the whole answer this way
    if not isinstance(content, str):
        raise bad_response("response has no choices[0].message.content text")
    return Completion(
        content=content,
        model=_model_of(payload, model),
        usage=parse_usage(getattr(payload, "usage", None)),
        finish_reason=_reason(getattr(choice, "finish_reason", None)),
    )


def parse_usage(value: Any) -> Usage | None:
    """``usage`` when it holds integer ``prompt_tokens`` and ``completion_tokens``, else None."""
    if value is None:
        return None
    prompt = _count(getattr(value, "prompt_tokens", None))
    completion = _count(getattr(value, "completion_tokens", None))
    if prompt is None or completion is None:
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


async def read_stream(
    lines: AsyncIterator[str],
    headers: httpx.Headers,
    model: str,
    on_delta: DeltaCallback,
    delivered: Delivered,
) -> Completion:
    """Read an SSE stream of ``chat.completion.chunk`` objects up to ``data: [DONE]``."""
    if "json" in headers.get("content-type", ""):
        # The server ignored "stream": true and sent one JSON completion.
        body = "\n".join([line async for line in lines])
        completion = parse_completion(ChatCompletion.model_construct(**_object(body)), model)
        if completion.content:
            delivered.any = True
            await on_delta(completion.content)
        return completion
    parts: list[str] = []
    usage: Usage | None = None
    finish_reason: str | None = None
    model_name = model
    done = False
    async with contextlib.aclosing(_sse_data(lines)) as events:
        async for data in events:
            if data == "[DONE]":
                done = True
                await _drain(events)
                break
            raw = _object(data)
            if "error" in raw:
                message = error_message(data.encode()) or "unknown error"
                raise ProviderError(
                    f"error inside the stream: {message}",
                    kind=ProviderErrorKind.SERVER_ERROR.value,
                )
            chunk = ChatCompletionChunk.model_construct(**raw)
            model_name = _model_of(chunk, model_name)
            usage = parse_usage(getattr(chunk, "usage", None)) or usage
            for text, reason in _choice_deltas(chunk):
                finish_reason = reason or finish_reason
                if text:
                    parts.append(text)
                    delivered.any = True
                    await on_delta(text)
    if not done and finish_reason is None:
        raise bad_response("stream ended before [DONE]")
    return Completion("".join(parts), model_name, usage, finish_reason)


def _choice_deltas(chunk: ChatCompletionChunk) -> list[tuple[str, str | None]]:
    """``(choices[0].delta.content, finish_reason)`` of a chunk; the usage chunk has none."""
    choices = getattr(chunk, "choices", None) or []
    if not isinstance(choices, list):
        raise bad_response("stream chunk choices is not a list")
    found: list[tuple[str, str | None]] = []
    for choice in choices:
        if not hasattr(choice, "delta") and not hasattr(choice, "finish_reason"):
            raise bad_response("stream chunk choice is not an object")
        if (getattr(choice, "index", 0) or 0) != 0:
            continue
        text = getattr(getattr(choice, "delta", None), "content", None)
        if text is not None and not isinstance(text, str):
            raise bad_response("stream delta content is not text")
        found.append((text or "", _reason(getattr(choice, "finish_reason", None))))
    return found


async def _sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The payload of every ``data:`` line of a server-sent-events body.

    Each line is its own event: the servers we speak to put one JSON object per ``data:`` line,
    and some omit the blank line between events.
    """
    async for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


async def _drain(events: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body) so that the connection
    goes back to the pool; a server that keeps the body open is cut off after a moment."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in events:
                pass


# --- errors -----------------------------------------------------------------------------------


def error_for_status(exc: openai.APIStatusError) -> ProviderError:
    """The ``ProviderError`` for a non-2xx answer the SDK raised."""
    response = exc.response
    status = response.status_code
    detail = f"{response.url.host} answered {status} {response.reason_phrase}".rstrip()
    message = error_message(response.content)
    if message:
        detail += f": {message}"
    if status in (401, 403):
        return ProviderError(detail, kind=ProviderErrorKind.AUTH.value, status_code=status)
    if status == 429:
        return ProviderError(
            detail,
            kind=ProviderErrorKind.RATE_LIMITED.value,
            status_code=status,
            retry_after=retry_after_of(response.headers),
        )
    if 400 <= status < 500:
        overflow = context_overflow(exc.code, exc.type, message, exc.body)
        if overflow is not None:
            return ProviderError(
                detail,
                kind=ProviderErrorKind.CONTEXT_LENGTH_EXCEEDED.value,
                status_code=status,
                **overflow,
            )
        return ProviderError(detail, kind=ProviderErrorKind.BAD_REQUEST.value, status_code=status)
    kind = ProviderErrorKind.SERVER_ERROR if status >= 500 else ProviderErrorKind.BAD_RESPONSE
    return ProviderError(detail, kind=kind.value, status_code=status)


def context_overflow(
    code: str | None, kind: str | None, message: str, body: object
) -> dict[str, int] | None:
    """None unless a 4xx answer says the prompt is longer than the model's window; else what it
    tells of the sizes: ``context_window`` and ``prompt_tokens`` where the server names them."""
    named = code in _OVERFLOW_CODES or kind in _OVERFLOW_CODES
    if not named and not _OVERFLOW_TEXT.search(message):
        return None
    sizes: dict[str, int] = {}
    if window := _WINDOW_TEXT.search(message):
        sizes["context_window"] = int(window.group(1))
    if prompt := _PROMPT_TEXT.search(message):
        sizes["prompt_tokens"] = int(prompt.group(1))
    if isinstance(body, dict):  # llama.cpp's fields
        for key, name in (("n_ctx", "context_window"), ("n_prompt_tokens", "prompt_tokens")):
            value = _count(body.get(key))
            if value is not None:
                sizes[name] = value
    return sizes


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


def retry_after_of(headers: httpx.Headers) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms`` (OpenAI's), else ``Retry-After``."""
    with contextlib.suppress(TypeError, ValueError):
        return max(float(headers.get("retry-after-ms", "")) / 1000, 0.0)
    return parse_retry_after(headers.get("retry-after"))


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


def bad_response(detail: str) -> ProviderError:
    return ProviderError(detail, kind=ProviderErrorKind.BAD_RESPONSE.value)


# --- small parts ------------------------------------------------------------------------------


def _object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise bad_response(f"invalid JSON from the provider: {exc}") from exc
    if not isinstance(value, dict):
        raise bad_response("the provider sent JSON that is not an object")
    return value


def _model_of(payload: object, default: str) -> str:
    model = getattr(payload, "model", None)
    return model if isinstance(model, str) and model else default


def _reason(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
