"""A small OpenAI-compatible HTTP/1.1 server for tests, on a real TCP port of 127.0.0.1.

It speaks the Chat Completions wire format (JSON completions; SSE chunks, a usage chunk and
``data: [DONE]`` when ``stream`` is true) and records every request. The model name picks a
scripted behaviour:

    fail-500 / fail-500-then-ok     500 every time / on the first request only
    fail-429 / fail-429-then-ok     429 with ``Retry-After: <retry_after>``
    drop / drop-then-ok             close the connection without answering
    auth-401                        401 with an OpenAI-style error body
    bad-400                         400 with an OpenAI-style error body
    garbage-json                    200 whose body is not JSON
    missing-fields                  200 JSON without choices
    hang                            never answer
    slow-stream                     stream one delta, then never send more
    stream-cut                      stream two deltas, then drop the connection mid-body
    stream-error                    stream one delta, then an ``{"error": ...}`` event
    done-then-stall                 stream the reply and ``[DONE]``, then never end the body
    ignore-stream                   answer a streaming request with a plain JSON completion
    no-usage                        answer without usage (streams carry usage only when
                                    ``stream_options.include_usage`` asks for it)
    length                          stop early: ``finish_reason: "length"``, half the reply
    content-filter                  withhold the reply: ``finish_reason: "content_filter"``
    anything else                   answer ``Echo: <last user message>``; a request whose first
                                    message is a system message starting "Summarize" gets
                                    ``Summary: <the first 8 words of the last user message>``

Server options: ``api_key`` (checked as ``Authorization: Bearer`` or Azure's ``api-key``),
``retry_after`` (the 429 header), ``reject_stream_options`` (answer 400 to ``stream_options``, as
older Azure api-versions do) and ``context_window`` (answer 400 ``context_length_exceeded``, in
OpenAI's words, to a prompt of more tokens than that; a token here is a whitespace-separated word,
as in the reported usage).

Use it as ``async with FakeOpenAI() as server: ... server.base_url``; or run
``python -m tests.providers.fake_openai --port 8089`` to serve it from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it; header names are lower case."""

    method: str
    target: str
    headers: dict[str, str]
    body: Any
    connection: int

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


class _Drop(Exception):
    """Close the connection now, without a (complete) response."""


class FakeOpenAI:
    """The server; ``requests`` and ``hits`` (per model) show what it was asked."""

    def __init__(
        self,
        api_key: str | None = None,
        retry_after: str = "1",
        *,
        reject_stream_options: bool = False,
        context_window: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.retry_after = retry_after
        self.reject_stream_options = reject_stream_options
        self.context_window = context_window
        self.requests: list[RecordedRequest] = []
        self.hits: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self.connections = 0
        self.errors: list[Exception] = []
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._stopping = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Wake stalled handlers and end idle keep-alive reads, so every handler returns normally.
        self._stopping.set()
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            _, stuck = await asyncio.wait(self._connections, timeout=5)
            for task in stuck:
                task.cancel()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _stall(self) -> None:
        """Send nothing more until the server closes, then drop the connection."""
        await self._stopping.wait()
        raise _Drop

    # --- HTTP/1.1 --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.connections += 1
        number = self.connections
        try:
            while await self._one_request(reader, writer, number):
                pass
        except (_Drop, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a bug of this server: make the test fail, not just log
            self.errors.append(exc)
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(RecordedRequest(method, target, headers, body, connection))
        await self._respond(method, target, headers, body, writer)
        return headers.get("connection", "").lower() != "close"

    async def _respond(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: Any,
        writer: asyncio.StreamWriter,
    ) -> None:
        if method != "POST" or not target.partition("?")[0].endswith("/chat/completions"):
            return await _send_json(writer, 404, {"error": {"message": "no such route"}})
        if self.api_key is not None and self.api_key not in (
            headers.get("authorization", "").removeprefix("Bearer "),
            headers.get("api-key"),
        ):
            return await _send_json(writer, 401, _error("Incorrect API key provided"))
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await _send_json(writer, 400, _error("'messages' is a required property"))
        model = str(body.get("model", ""))
        self.hits[model] += 1
        first = self.hits[model] == 1
        stream = body.get("stream") is True
        if self.reject_stream_options and "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            return await _send_json(writer, 400, _error(message))
        prompt_tokens = _usage(body["messages"], "")["prompt_tokens"]
        if self.context_window is not None and prompt_tokens > self.context_window:
            message = (
                f"This model's maximum context length is {self.context_window} tokens. However, "
                f"your messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                "the messages."
            )
            error = _error(message)
            error["error"] |= {"param": "messages", "code": "context_length_exceeded"}
            return await _send_json(writer, 400, error)
        if model == "hang" or (model == "slow-stream" and not stream):
            await self._stall()
        if model == "fail-500" or (model == "fail-500-then-ok" and first):
            return await _send_json(writer, 500, _error("The server had an error", "server_error"))
        if model == "fail-429" or (model == "fail-429-then-ok" and first):
            extra = {"Retry-After": self.retry_after}
            return await _send_json(writer, 429, _error("Rate limit reached"), extra)
        if model == "drop" or (model == "drop-then-ok" and first):
            raise _Drop
        if model == "auth-401":
            return await _send_json(writer, 401, _error("Incorrect API key provided"))
        if model == "bad-400":
            return await _send_json(writer, 400, _error(f"The model `{model}` does not exist"))
        if model == "garbage-json":
            return await _send(writer, 200, b'{"choices": [{"message": ', "application/json")
        if model == "missing-fields":
            return await _send_json(writer, 200, {"id": "chatcmpl-fake", "choices": []})
        reply = f"Echo: {_last_user(body['messages'])}"
        if _asks_for_summary(body["messages"]):
            reply = "Summary: " + " ".join(_last_user(body["messages"]).split()[:8])
        finish = "stop"
        if model == "length":
            reply, finish = reply[: len(reply) // 2], "length"
        if model == "content-filter":
            reply, finish = "", "content_filter"
        usage = None if model == "no-usage" else _usage(body["messages"], reply)
        if stream and model != "ignore-stream":
            # as OpenAI does: a usage chunk only when stream_options asks for it
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                usage = None
            return await _send_stream(writer, model, reply, usage, self._stall, finish)
        return await _send_json(writer, 200, _completion(model, reply, usage, finish))


# --- wire format ---------------------------------------------------------------------------


def _error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _last_user(messages: list[Any]) -> str:
    users = [
        m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"
    ]
    return str(users[-1]) if users else ""


def _asks_for_summary(messages: list[Any]) -> bool:
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    return first.get("role") == "system" and str(first.get("content", "")).startswith("Summarize")


def _usage(messages: list[Any], reply: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    completion = len(reply.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(
    model: str, reply: str, usage: dict[str, int] | None, finish: str = "stop"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply or None},
                "finish_reason": finish,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def _chunk(model: str, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    content_type: str,
    extra: dict[str, str] | None = None,
) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    head += [f"Content-Type: {content_type}", f"Content-Length: {len(payload)}"]
    head += [f"{name}: {value}" for name, value in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
    await writer.drain()


async def _send_json(
    writer: asyncio.StreamWriter, status: int, body: Any, extra: dict[str, str] | None = None
) -> None:
    await _send(writer, status, json.dumps(body).encode(), "application/json", extra)


async def _send_stream(
    writer: asyncio.StreamWriter,
    model: str,
    reply: str,
    usage: dict[str, int] | None,
    stall: Callable[[], Awaitable[None]],
    finish: str = "stop",
) -> None:
    """SSE over chunked transfer encoding, as OpenAI sends it."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    async def event(data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        writer.write(f"{len(payload):X}\r\n".encode() + payload + b"\r\n")
        await writer.drain()

    await event(json.dumps(_chunk(model, {"role": "assistant", "content": ""})))
    words = [w + " " for w in reply.split(" ")] if reply else []
    if words:
        words[-1] = words[-1][:-1]
    for index, word in enumerate(words):
        await event(json.dumps(_chunk(model, {"content": word})))
        if model == "slow-stream":
            await stall()
        if model == "stream-cut" and index == 1:
            raise _Drop
        if model == "stream-error":
            await event(json.dumps(_error("The server is overloaded", "server_error")))
            break
    await event(json.dumps(_chunk(model, {}, finish=finish)))
    if usage is not None:
        final = _chunk(model, {}) | {"choices": [], "usage": usage}
        await event(json.dumps(final))
    await event("[DONE]")
    if model == "done-then-stall":
        await stall()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _serve_forever(port: int) -> None:
    server = FakeOpenAI()
    await server.start(port)
    print(server.base_url, flush=True)
    try:
        await server.serve_forever()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI-compatible API.")
    parser.add_argument("--port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(parser.parse_args().port))


if __name__ == "__main__":
    main()
