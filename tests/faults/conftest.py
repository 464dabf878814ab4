"""Fault tests: real processes (``sessionctl serve`` / ``worker``) on a dedicated real Redis per
test, killed and restarted on purpose. Everything listens on 127.0.0.1 only. Every line the
children print must be a JSON log line in the production format (checked at teardown).

``Processes`` starts the children of one test and kills every one of them at teardown, whatever
the test did; ``RedisServers`` does the same for the test's own redis-server processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from service.embedded import RedisProcess, free_port
from service.tenants import TenantRegistry
from tests.logcheck import assert_json_logs

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "flt"
TENANT = "acme"
PROBLEM_JSON = "application/problem+json"


@dataclass
class Api:
    """One ``sessionctl serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Processes:
    """API and worker processes of one test, on one Redis; all are killed at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def env(self, redis_url: str, **extra: str) -> dict[str, str]:
        # Settings of the developer's shell must not leak into the children.
        base = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONS_")}
        return {
            **base,
            "SESSIONS_REDIS_URL": redis_url,
            "SESSIONS_KEY_PREFIX": PREFIX,
            "SESSIONS_RATE_LIMIT_PER_SECOND": "0",
            "SESSIONS_WORKER_POLL_DELAY_SECONDS": "0.005",
            "SESSIONS_LOG_LEVEL": "INFO",  # every line is checked at teardown
            **extra,
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        name = f"{name}-{len(self.procs)}"
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli.main", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((name, proc))
        return proc

    def api(self, redis_url: str, **env: str) -> Api:
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.spawn("api", args, self.env(redis_url, **env))
        return Api(proc, port, self.procs[-1][0])

    def api_processes(self, redis_url: str, workers: int, **env: str) -> Api:
        """``serve --workers N``: uvicorn's process manager in front of N API processes."""
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        proc = self.spawn("api", args, self.env(redis_url, **env))
        return Api(proc, port, self.procs[-1][0])

    def worker(self, redis_url: str, **env: str) -> subprocess.Popen[bytes]:
        return self.spawn("worker", ["worker"], self.env(redis_url, **env))

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no shutdown handler runs, exactly like a crashed or OOM-killed pod."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def kill_all(self) -> None:
        for _, proc in self.procs:
            self.kill(proc)

    def output(self) -> str:
        """The tail of every child's log, for assertion messages."""
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


class RedisServers:
    """The test's own redis-server processes (fixed port and data dir each, so a killed one
    restarts in place); all are killed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[RedisProcess] = []

    def start(self, name: str = "redis", **options: Any) -> RedisProcess:
        server = RedisProcess(self.root / name, port=free_port(), **options)
        self.servers.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                # a test may have frozen it (SIGSTOP); a stopped process still dies of SIGKILL
                server.proc.send_signal(signal.SIGCONT)
            server.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    p = Processes(logs)
    try:
        yield p
    finally:
        p.kill_all()
    assert_json_logs(logs)


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    servers = RedisServers(tmp_path / "redis")
    try:
        yield servers
    finally:
        servers.stop_all()


@contextlib.asynccontextmanager
async def redis_client(url: str, **options: Any) -> AsyncIterator[Redis]:
    client = Redis.from_url(url, decode_responses=True, **options)
    try:
        yield client
    finally:
        await client.aclose()


async def create_tenant(redis_url: str, tenant: str = TENANT) -> str:
    """A tenant made straight in Redis, as ``sessionctl tenants create`` does; its API key."""
    async with redis_client(redis_url) as redis:
        _, key = await TenantRegistry(redis, PREFIX).create(tenant)
    return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def wait_ready(api: Api, procs: Processes, timeout: float = 30.0) -> None:
    """Until ``/readyz`` answers 200; fails at once if the process died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
        while loop.time() < deadline:
            if api.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{api.name} did not become ready:\n{procs.output()}")


async def until(check: Callable[[], bool], what: str, procs: Processes, timeout: float) -> None:
    """Until ``check()`` holds; fails with every child's log after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{procs.output()}")
        await asyncio.sleep(0.02)


async def all_events(
    http: httpx.AsyncClient, session_id: str, *, live: bool = False
) -> list[dict[str, Any]]:
    """Every stored event of a session, through the API, page by page; with ``live``, every
    event the live window holds (transient ones too: what followers were sent)."""
    if live:
        resp = await http.get(f"/v1/sessions/{session_id}/events", params={"live": "true"})
        assert resp.status_code == 200, resp.text
        live_events: list[dict[str, Any]] = resp.json()["data"]
        return live_events
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        resp = await http.get(f"/v1/sessions/{session_id}/events", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()["data"]
        events += page
        if len(page) < 1000:
            return events
        params["after"] = page[-1]["id"]


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """``resp`` is an ``application/problem+json`` answer with ``status``; its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = json.loads(resp.content)
    assert body["status"] == status and body["title"] and body["detail"], body
    return body
