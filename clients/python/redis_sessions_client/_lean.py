"""Plain HTTP/1.1 requests on kept-alive asyncio connections, for the async client's calls whose
answer is read whole (everything but event streams).

httpx spends about 0.6 ms of CPU on each request (URL merging, cookies, its connection pool's
bookkeeping, reading the body through three layers of streams): as much as the service spends
answering a read of 1,000 items. This path writes the request in one piece and reads the answer
with one ``StreamReader``, then hands an ``httpx.Response`` to the same retry and error handling
as before, with errors mapped to httpx's (``ConnectError``, ``ReadTimeout`` ...) so that
``_retry`` decides exactly as it does for httpx. What it sends is what httpx would send: the
same JSON (``allow_nan=False``), header values checked the same way, the same idle expiry, and a
kept-alive connection is reused only while its socket has nothing to read (no close from the
server waiting), as httpcore checks it. Timeouts as httpx's, except that connecting and the
answer's head share one budget: ``within`` bounds those two together, then each silence while
the body arrives.

It is used only where it does what httpx would: an ``http://`` base URL without credentials that
no proxy setting of the environment applies to, and no transport given. Anything else
(``https``, proxies, a test's ``ASGITransport``) goes through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import select
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

IDLE_EXPIRY_S = 5.0  # as httpx: an idle connection older than this is closed, not reused
MAX_IDLE = 50  # idle connections kept
HEAD_LIMIT = 100 * 1024  # the longest answer head read (httpx's, h11's default)
NO_BODY = frozenset({204, 304})
_ENCODE = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_ILLEGAL = ("\r", "\n", "\0")


def usable(base_url: str) -> bool:
    """Whether this path does what httpx would for ``base_url``: plain ``http``, no
    ``user:password@``, and no ``HTTP_PROXY`` or ``ALL_PROXY`` in the environment (httpx
    honours those; then it is used)."""
    url = urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    return (
        url.scheme == "http"
        and bool(url.hostname)
        and url.username is None
        and not {"http", "all"} & proxies.keys()
    )


def _header(name: str, value: str) -> str:
    if any(c in name or c in value for c in _ILLEGAL) or ":" in name:
        raise httpx.LocalProtocolError(f"illegal header {name!r}: {value!r}")
    return f"{name}: {value}\r\n"


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    def stale(self, now: float) -> bool:
        """Closed, at its end, or idle too long (no system call: cheap enough for every idle
        connection on every take)."""
        return (
            self.writer.is_closing()
            or self.reader.at_eof()
            or now - self.idle_since >= IDLE_EXPIRY_S
        )

    def readable(self) -> bool:
        """Whether the socket has something to read while no answer is due: a close from the
        server (even one the event loop has not seen yet) or bytes nobody asked for."""
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return True
        poll = select.poll()
        poll.register(sock.fileno(), select.POLLIN)
        return bool(poll.poll(0))

    def close(self) -> None:
        self.writer.close()


class LeanHttp:
    """Requests to one ``http://`` origin; ``headers`` go with every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        url = urlsplit(base_url)
        assert url.hostname is not None
        self._host, self._port = url.hostname, url.port or 80
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        if url.port is not None:
            host += f":{url.port}"
        self._prefix = quote(url.path.rstrip("/"), safe="/%:@!$&'()*+,;=~")
        self._head = "".join(_header(k, v) for k, v in {"Host": host, **headers}.items())
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        self._url = base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        within: float | None,
    ) -> httpx.Response:
        """Send one request and read its answer; ``within`` (None: no bound) bounds connecting,
        the answer's head and each silence while its body arrives."""
        target = self._prefix + path
        if params:
            target += "?" + urlencode(params)
        head = f"{method} {target} HTTP/1.1\r\n{self._head}"
        for name, value in (headers or {}).items():
            head += _header(name, value)
        body = b""
        if json is not None:
            body = _ENCODE(json).encode()  # ValueError for NaN and infinities, as httpx
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        data = head.encode("ascii") + b"\r\n" + body  # UnicodeEncodeError, as httpx
        loop = asyncio.get_running_loop()
        ends = None if within is None else loop.time() + within
        conn = await self._connection(ends)
        self._busy.add(conn)
        try:
            async with asyncio.timeout_at(ends) as timeout:

                def progress() -> None:
                    if within is not None:
                        timeout.reschedule(loop.time() + within)

                conn.writer.write(data)
                response, keep = await _answer(conn.reader, method, progress)
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
        finally:
            self._busy.discard(conn)
        if keep and not self._closed and len(self._idle) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        """Close every connection, idle or in use (a call still running fails)."""
        self._closed = True
        conns = [*self._idle, *self._busy]
        self._idle, self._busy = [], set()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    async def _connection(self, ends: float | None) -> _Connection:
        """The newest reusable idle connection, else a new one; stale ones are closed."""
        now = time.monotonic()
        fresh: list[_Connection] = []
        for conn in self._idle:
            if conn.stale(now):
                conn.close()
            else:
                fresh.append(conn)
        self._idle = fresh
        while self._idle:
            conn = self._idle.pop()
            if not conn.readable():
                return conn
            conn.close()
        try:
            async with asyncio.timeout_at(ends):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, limit=HEAD_LIMIT
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"cannot connect to {self._url} in time") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self._url}: {exc}") from exc
        return _Connection(reader, writer)


async def _answer(
    reader: asyncio.StreamReader, method: str, progress: Callable[[], None]
) -> tuple[httpx.Response, bool]:
    """The response, and whether the connection may carry another request. ``progress()`` is
    called whenever part of the body has arrived."""
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status_text, *_ = lines[0].split(" ", 2)
        status = int(status_text)
        if status >= 200 or status == 101:
            break  # an interim answer (100 Continue) is skipped
    headers: list[tuple[str, str]] = []
    lengths: set[int] = set()
    chunked = False
    keep = version == "HTTP/1.1"
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise ValueError("folded header line")
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        headers.append((name, value))
        lowered = name.lower()
        if lowered == "content-length":
            lengths.add(int(value))
        elif lowered == "transfer-encoding":
            if value.lower() != "chunked":
                raise ValueError(f"unsupported Transfer-Encoding {value!r}")
            chunked = True
        elif lowered == "connection":
            keep = "close" not in value.lower() if keep else "keep-alive" in value.lower()
    if len(lengths) > 1:
        raise ValueError(f"conflicting Content-Length headers {sorted(lengths)}")
    if method == "HEAD" or status in NO_BODY or 100 <= status < 200:
        content = b""
    elif chunked:
        content = await _chunks(reader, progress)
    elif lengths:
        content = await _exactly(reader, lengths.pop(), progress)
    else:  # the body runs to the end of the connection
        parts = []
        while chunk := await reader.read(1 << 20):
            parts.append(chunk)
            progress()
        content, keep = b"".join(parts), False
    return httpx.Response(status, headers=headers, content=content), keep


async def _exactly(reader: asyncio.StreamReader, n: int, progress: Callable[[], None]) -> bytes:
    """``n`` bytes, however many reads they take (each one restarts the silence timeout)."""
    parts: list[bytes] = []
    while n > 0:
        chunk = await reader.read(n)
        if not chunk:
            raise asyncio.IncompleteReadError(b"".join(parts), None)
        parts.append(chunk)
        n -= len(chunk)
        progress()
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _chunks(reader: asyncio.StreamReader, progress: Callable[[], None]) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append((await _exactly(reader, size + 2, progress))[:-2])
