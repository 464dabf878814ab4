"""An in-process ASGI transport that streams.

``httpx.ASGITransport`` returns a response only once the app has finished sending it, which an
endless Server-Sent Events stream never does. This transport returns the response as soon as the
app starts it and hands the body over chunk by chunk; closing the response tells the app the
client went away (``http.disconnect``), as a real server would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

_END = object()


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[Any], task: asyncio.Task[None], gone: asyncio.Event
    ) -> None:
        self._chunks = chunks
        self._task = task
        self._gone = gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise httpx.ReadError("the app failed while streaming") from item
            yield item

    async def aclose(self) -> None:
        self._gone.set()
        if not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Runs ``app`` in this event loop; every exception the app raises is kept in ``errors``."""

    def __init__(self, app: Any, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self.client = client
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Hook for tests: a callable (request, response) -> response applied to every answer.
        self.intercept: Any = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": self.client,
            "root_path": "",
        }
        loop = asyncio.get_running_loop()
        started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = loop.create_future()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        gone = asyncio.Event()
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if gone.is_set():
                return  # the client went away: drop the rest, as a server would
            if message["type"] == "http.response.start":
                started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(_END)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                self.errors.append(exc)
                if not started.done():
                    started.set_exception(exc)
                chunks.put_nowait(exc)
            finally:
                chunks.put_nowait(_END)

        task = loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        waiters: set[asyncio.Future[Any]] = {started, task}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            raise RuntimeError("the app returned without starting a response")
        status, headers = started.result()
        response = httpx.Response(
            status, headers=headers, stream=_Body(chunks, task, gone), request=request
        )
        if self.intercept is not None:
            response = self.intercept(request, response)
        return response

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
