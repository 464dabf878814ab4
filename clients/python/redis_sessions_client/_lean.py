"""Plain HTTP/1.1 requests on kept-alive asyncio connections, for the async client's calls whose
answer is read whole (everything but event streams).

httpx spends about 0.6 ms of CPU on each request (URL merging, cookies, its connection pool's
bookkeeping, reading the body through three layers of streams): as much as the service spends
answering a read of 1,000 items. This path writes the request in one piece and reads the answer
with one ``StreamReader``, then hands an ``httpx.Response`` to the same retry and error handling
as before, with errors mapped to httpx's (``ConnectError``, ``ReadTimeout`` ...) so that
``_retry`` decides exactly as it does for httpx.

It is used only where it does what httpx would: an ``http://`` base URL that no proxy setting of
the environment applies to, and no transport given. Anything else (``https``, proxies, a test's
``ASGITransport``) goes through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

_dumps: Callable[[Any], bytes]
try:
    import orjson

    def _dumps(value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError:  # integers beyond 64 bits, keys that are not strings
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

except ImportError:  # pragma: no cover - the base install

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


IDLE_EXPIRY_S = 5.0  # as httpx: an idle connection older than this is closed, not reused
MAX_IDLE = 50  # idle connections kept
NO_BODY = frozenset({204, 304})


def usable(base_url: str) -> bool:
    """Whether this path does what httpx would for ``base_url``: plain ``http``, with no
    ``HTTP_PROXY`` or ``ALL_PROXY`` in the environment (httpx honours those; then it is used)."""
    url = urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    return url.scheme == "http" and bool(url.hostname) and not {"http", "all"} & proxies.keys()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    def reusable(self, now: float) -> bool:
        """Open, with nothing unasked-for waiting (a closed or chattering peer), not too old."""
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]
            and now - self.idle_since < IDLE_EXPIRY_S
        )

    def close(self) -> None:
        self.writer.close()


class LeanHttp:
    """Requests to one ``http://`` origin; ``headers`` go with every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        url = urlsplit(base_url)
        assert url.hostname is not None
        self._host, self._port = url.hostname, url.port or 80
        self._prefix = url.path.rstrip("/")
        fixed = {"Host": url.netloc, **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []
        self._url = base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        within: float,
    ) -> httpx.Response:
        """Send one request and read its whole answer within ``within`` seconds."""
        target = self._prefix + path
        if params:
            target += "?" + urlencode(params)
        head = f"{method} {target} HTTP/1.1\r\n{self._head}"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        body = b""
        if json is not None:
            body = _dumps(json)
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        data = head.encode() + b"\r\n" + body
        loop = asyncio.get_running_loop()
        ends = loop.time() + within
        conn = await self._connection(ends)
        try:
            async with asyncio.timeout_at(ends):
                conn.writer.write(data)
                response, keep = await self._answer(conn.reader, method)
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout(f"no answer within {within:.3g} s") from exc
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            raise httpx.RemoteProtocolError(f"bad or cut-off answer: {exc!r}") from exc
        except OSError as exc:
            conn.close()
            raise httpx.ReadError(repr(exc)) from exc
        except BaseException:  # cancelled mid-request: the connection's state is unknown
            conn.close()
            raise
        if keep and len(self._idle) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    async def _connection(self, ends: float) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        try:
            async with asyncio.timeout_at(ends):
                reader, writer = await asyncio.open_connection(self._host, self._port)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"cannot connect to {self._url} in time") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self._url}: {exc}") from exc
        return _Connection(reader, writer)

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, method: str) -> tuple[httpx.Response, bool]:
        """The response, and whether the connection may carry another request."""
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw[:-4].decode("latin-1").split("\r\n")
            version, status_text, *_ = lines[0].split(" ", 2)
            status = int(status_text)
            if status >= 200 or status == 101:
                break  # an interim answer (100 Continue) is skipped
        headers: list[tuple[str, str]] = []
        length = -1
        chunked = False
        keep = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                length = int(value)
            elif lowered == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lowered == "connection":
                keep = "close" not in value.lower() if keep else "keep-alive" in value.lower()
        if method == "HEAD" or status in NO_BODY or 100 <= status < 200:
            content = b""
        elif chunked:
            content = await _chunks(reader)
        elif length >= 0:
            content = await reader.readexactly(length)
        else:  # the body runs to the end of the connection
            content = await reader.read()
            keep = False
        return httpx.Response(status, headers=headers, content=content), keep


async def _chunks(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])
