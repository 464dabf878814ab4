"""A small HTTP/1.1 load generator: N keep-alive connections, each sending its next request as
soon as the previous answer is in, for a fixed time.

It speaks just enough HTTP/1.1 (a request line, a few headers, ``Content-Length`` or chunked
bodies) to cost far less CPU per request than a general client such as httpx: on a small
machine the load generator shares the cores with the servers it measures, and a heavy client
would make every server look alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# (method, path, body or None) for request number ``i`` of client ``c``
RequestFactory = Callable[[int, int], tuple[str, str, bytes | None]]


class HttpConnection:
    """One keep-alive connection to ``host:port``."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and read its whole response: ``(status, body)``."""
        if self._writer is None or self._reader is None:
            await self.open()
        assert self._writer is not None and self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = -1
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            data = await self._read_chunked()
        elif length >= 0:
            data = await self._reader.readexactly(length)
        else:
            data = await self._reader.read()
            close = True
        if close:
            await self.close()
        return status, data

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_load(
    targets: list[tuple[str, int]],
    clients: int,
    seconds: float,
    make_request: RequestFactory,
    *,
    headers: dict[str, str] | None = None,
    expect: int = 200,
) -> LoadResult:
    """``clients`` connections spread round-robin over ``targets`` (host, port), each sending
    requests back to back for ``seconds``. Counts only answers with status ``expect``."""
    conns = [
        await HttpConnection(*targets[c % len(targets)], headers=headers).open()
        for c in range(clients)
    ]
    result = LoadResult(0, 0.0)
    start = time.perf_counter()
    deadline = start + seconds

    async def client(c: int) -> None:
        conn = conns[c]
        i = 0
        while time.perf_counter() < deadline:
            method, path, body = make_request(c, i)
            i += 1
            t0 = time.perf_counter()
            status, data = await conn.request(method, path, body)
            elapsed = (time.perf_counter() - t0) * 1000
            if status == expect:
                result.requests += 1
                result.latencies_ms.append(elapsed)
            else:
                result.errors += 1
                if not result.first_error:
                    result.first_error = f"{status} {data[:200]!r}"

    try:
        await asyncio.gather(*(client(c) for c in range(clients)))
        result.seconds = time.perf_counter() - start
    finally:
        for conn in conns:
            await conn.close()
    return result
