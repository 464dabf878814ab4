"""Fixtures of the security suite: the app in-process on the suite's real Redis, and a real
``sessionctl serve`` process (uvicorn on a loopback port) for what only a socket shows: fuzzing
over HTTP, slow clients, client addresses, logs on stderr, streams.

The server process lives for the whole run; every test that uses it flushes Redis first (through
``real_redis``) and creates the tenants it needs, so no test sees another's data or counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from service.api.main import create_app
from service.config import Settings
from service.embedded import free_port
from service.runtime import Runtime, build_runtime
from service.tenants import TenantRegistry
from tests.api.conftest import TenantKey
from workers.queue import TurnQueue

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "secu"
ADMIN_KEY = "admin-security-suite-0123456789abcdef"
MAX_MESSAGE_BYTES = 16 * 1024
BODY_TIMEOUT_SECONDS = 2.0


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "queue_redis_url": redis_url,
        "key_prefix": PREFIX,
        "admin_key": SecretStr(ADMIN_KEY),
        "rate_limit_per_second": 0,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "body_timeout_seconds": BODY_TIMEOUT_SECONDS,
        "default_ttl_seconds": 3600,
        "max_sessions_per_tenant": 1000,
    }
    values.update(overrides)
    return Settings(**values)


# --- the app in-process ------------------------------------------------------------------------
@pytest.fixture
def settings(redis_server_url: str, real_redis: Redis) -> Settings:
    return make_settings(redis_server_url)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = build_runtime(settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[TurnQueue]:
    q = await TurnQueue.connect(settings)
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
def app(settings: Settings, runtime: Runtime, queue: TurnQueue) -> FastAPI:
    return create_app(settings, runtime=runtime, queue=queue)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def new_tenant(redis: Any, tenant_id: str) -> TenantKey:
    tenant, key = await TenantRegistry(redis, PREFIX).create(tenant_id)
    return TenantKey(tenant.id, key)


@pytest.fixture
async def alpha(real_redis: Redis) -> TenantKey:
    return await new_tenant(real_redis, "alpha")


@pytest.fixture
async def beta(real_redis: Redis) -> TenantKey:
    return await new_tenant(real_redis, "beta")


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- a real server process ---------------------------------------------------------------------
@dataclass
class LiveServer:
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


def server_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONS_")}
    env.update(
        SESSIONS_REDIS_URL=redis_url,
        SESSIONS_KEY_PREFIX=PREFIX,
        SESSIONS_RATE_LIMIT_PER_SECOND="0",
        SESSIONS_ADMIN_KEY=ADMIN_KEY,
        SESSIONS_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
        SESSIONS_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS),
        SESSIONS_DEFAULT_TTL_SECONDS="3600",
        PYTHONUNBUFFERED="1",
    )
    return env


def spawn_server(
    redis_url: str, log_path: Path, *args: str, env: dict[str, str] | None = None
) -> LiveServer:
    """``python -m service.cli.main serve ARGS`` on a free loopback port, at the default log
    level, its stdout and stderr in ``log_path``; returns once it answers ``/livez``."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", "serve", "--host", "127.0.0.1",
             "--port", str(port), *args],
            cwd=ROOT, env={**server_env(redis_url), **(env or {})}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = LiveServer("127.0.0.1", port, log_path, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{server.url}/livez", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"the server did not start: {log_path.read_text()}")
        time.sleep(0.05)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def live_server(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The server of the whole run (``spawn_server``)."""
    server = spawn_server(redis_server_url, tmp_path_factory.mktemp("live") / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def live(live_server: LiveServer, real_redis: Redis) -> LiveServer:
    """The server process, with Redis flushed for this test."""
    assert live_server.process.poll() is None, live_server.log_path.read_text()[-2000:]
    return live_server


@pytest.fixture
async def live_alpha(live: LiveServer, real_redis: Redis) -> TenantKey:
    return await new_tenant(real_redis, "alpha")


@pytest.fixture
async def live_beta(live: LiveServer, real_redis: Redis) -> TenantKey:
    return await new_tenant(real_redis, "beta")


# --- helpers -----------------------------------------------------------------------------------
@dataclass
class RawReply:
    data: bytes
    closed: bool  # the server closed the connection
    seconds: float  # from the end of sending to the close (or to the read deadline)

    @property
    def status(self) -> int | None:
        head = self.data.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) >= 2 and head[1].isdigit() else None

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        head = self.data.partition(b"\r\n\r\n")[0].decode("latin-1")
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


async def raw_exchange(
    server: LiveServer, *parts: bytes, pause: float = 0.0, read_for: float = 10.0
) -> RawReply:
    """Send ``parts`` over a plain socket, ``pause`` seconds apart (stopping when the server
    hangs up), while reading what comes back; then read on until the server closes or
    ``read_for`` seconds pass."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    received: list[bytes] = []

    async def read_all() -> bool:
        try:
            while chunk := await reader.read(65536):
                received.append(chunk)
        except ConnectionError:
            pass
        return True

    reading = asyncio.create_task(read_all())
    try:
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            if reading.done():
                break
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
        started = time.monotonic()
        try:
            closed = await asyncio.wait_for(asyncio.shield(reading), read_for)
        except TimeoutError:
            closed = False
        return RawReply(b"".join(received), closed, time.monotonic() - started)
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    """Every key with its serialized value (DUMP), to prove a refused call changed nothing."""
    raw = Redis(**{**redis.connection_pool.connection_kwargs, "decode_responses": False})
    try:
        keys = sorted([k async for k in raw.scan_iter(count=1000)])
        return {k: await raw.dump(k) for k in keys}
    finally:
        await raw.aclose()


def assert_problem(response: httpx.Response, status: int | set[int] | None = None) -> None:
    """An error answer: ``application/problem+json`` with ``type``, ``title``, ``status`` and
    ``detail``, its status equal to the HTTP status."""
    expected = {status} if isinstance(status, int) else status
    if expected is not None:
        assert response.status_code in expected, (response.status_code, response.text[:300])
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert isinstance(body, dict)
    assert isinstance(body.get("title"), str) and body["title"]
    assert isinstance(body.get("detail"), str) and body["detail"]
    assert body.get("status") == response.status_code
    assert isinstance(body.get("type"), str)
