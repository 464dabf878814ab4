"""HTTP throughput and latency of one API process against a minimal FastAPI app, same run.

Ours: ``sessionctl serve`` (``python -m service.cli.main serve``) as a subprocess, with default
settings except ``SESSIONS_RATE_LIMIT_PER_SECOND=0`` (so a load of thousands of requests per
second is not refused) and ``SESSIONS_MAX_PENDING_TURNS`` raised (no worker answers the sends);
it authenticates every request's API key, validates it, records metrics and logs one JSON line
per request (stderr goes to a temporary file).
Baseline: ``bench/minimal_app.py`` under uvicorn with the same options (one process, the same
event loop and HTTP implementation): raw redis-py sending Redis the same commands on the same
keys, and nothing else (no key check, validation, limits, metrics or logging). Each measured load
counts the commands Redis ran (``INFO commandstats``); the run fails unless both apps sent the
same commands per request, so the ratio is the cost of the API's own Python.

Load: ``CLIENTS`` keep-alive connections (``bench.httpload``, a lean HTTP/1.1 client running in
this process) sending back to back for a fixed time:
- send: ``POST /v1/sessions/{id}/messages`` with a 160-byte prompt, each client on its own
  session: one script reads the tenant record of the key and the key failure counter, one
  appends the ``user.message`` with its pending turn, one more enqueues the turn's arq job.
  No worker runs: the jobs queue up, and the queue is emptied between rounds.
- read: ``GET /v1/sessions/{id}/events?limit=1000`` of a 1,000-event session: the same key read,
  then one pipeline (HMGET of the session's id and history base, EXISTS of the earlier layout's
  key, LRANGE of the history; ours serves the page as one string built from the raw items; the
  minimal app decodes every item and re-encodes the page with orjson).

Requests/s is the best of the rounds; latency percentiles pool every measured round. CPU per
request (the server process's user+system time, and Redis's ``used_cpu_*``) goes into the notes:
it is what the scaling figures in docs/scaling.md are reasoned from.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from arq.constants import job_key_prefix
from redis.asyncio import Redis

from bench.common import Result, percentile
from bench.httpload import HttpConnection, LoadResult, RequestFactory, run_load
from bench.store_bench import CONTENT
from service.config import Settings
from service.embedded import free_port
from service.models import NewEvent
from service.store import Store
from service.tenants import TenantRegistry
from workers.queue import QueueNames

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 32
HISTORY = 1000
PREFIX = "ab"
TENANT = "bench"
HOST = "127.0.0.1"


# --- processes ---------------------------------------------------------------------------------
def api_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SESSIONS_REDIS_URL": redis_url,
        "SESSIONS_KEY_PREFIX": PREFIX,
        "SESSIONS_RATE_LIMIT_PER_SECOND": "0",
        # no worker answers here, so every send stays waiting in its session (both apps check it)
        "SESSIONS_MAX_PENDING_TURNS": "1000000000",
        "BENCH_REDIS_URL": redis_url,
        **extra,
    }


def api_command(port: int) -> list[str]:
    return [sys.executable, "-m", "service.cli.main", "serve", "--host", HOST, "--port", str(port)]


def minimal_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.minimal_app", "--host", HOST, "--port", str(port)]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@contextmanager
def server(name: str, command: list[str], env: dict[str, str], port: int) -> Iterator[Server]:
    """A server subprocess, stderr to a temporary file (read back if it fails to start)."""
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        log = Path(tmp) / "stderr.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
            )
        try:
            yield Server(name, port, proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_ready(srv: Server, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{srv.name} exited with {srv.proc.returncode}: {srv.log_tail()}")
        try:
            conn = await HttpConnection(HOST, srv.port).open()
            try:
                status, _ = await conn.request("GET", "/readyz")
            finally:
                await conn.close()
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{srv.name} not ready after {within:.0f}s: {srv.log_tail()}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def redis_cpu_seconds(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# --- data --------------------------------------------------------------------------------------
async def prepare(redis: Redis, clients: int) -> str:
    """The tenant (returns its API key), one session per client, and the 1,000-event session;
    both apps work on them."""
    _, api_key = await TenantRegistry(redis, PREFIX).create(TENANT)
    tenant = Store(redis, prefix=PREFIX, default_ttl=3600).tenant(TENANT)
    for c in range(clients):
        await tenant.create(f"s{c}", model="dev-echo")
    await tenant.create("hist", model="dev-echo")
    for i in range(HISTORY - 1):  # one append per event: ids (and timestamps) all differ
        await tenant.append(
            "hist", [NewEvent(type="user.message", data={"content": f"{i} {CONTENT}"})]
        )
    return api_key


async def drain_queues(redis: Redis) -> None:
    """Drop the queued turn jobs (no worker runs in this benchmark)."""
    batch: list[str] = []
    async for key in redis.scan_iter(match=f"{job_key_prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)
    await redis.delete(QueueNames.of(Settings(key_prefix=PREFIX)).queue)


# --- load --------------------------------------------------------------------------------------
PROMPT = orjson.dumps({"prompt": CONTENT})


def send_requests(base: str, clients: int) -> RequestFactory:
    paths = [f"{base}/s{c}/messages" for c in range(clients)]
    return lambda c, i: ("POST", paths[c % clients], PROMPT)


def read_requests(base: str, query: str) -> RequestFactory:
    path = f"{base}/hist/events{query}"
    return lambda c, i: ("GET", path, None)


# what each app answers to, per operation: (path base, query of a read, status of a send)
ROUTES = {"ours": ("/v1/sessions", "?limit=1000"), "minimal": ("/sessions", "")}
EXPECT = {"send": 202, "read": 200}


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    server_cpu_ms: list[float] = field(default_factory=list)
    redis_cpu_us: list[float] = field(default_factory=list)
    client_cpu_ms: list[float] = field(default_factory=list)
    commands: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    first_error: str = ""


async def measure(
    servers: list[Server],
    redis: Redis,
    api_key: str,
    app: str,
    op: str,
    clients: int,
    seconds: float,
) -> Sample:
    """One timed load on ``servers`` (clients split between them)."""
    base, query = ROUTES[app]
    factory = send_requests(base, clients) if op == "send" else read_requests(base, query)
    cpu0 = sum(process_cpu_seconds(s.proc.pid) for s in servers)
    rcpu0, calls0 = await redis_cpu_seconds(redis), await command_calls(redis)
    own0 = time.process_time()
    res = await run_load(
        [(HOST, s.port) for s in servers],
        clients,
        seconds,
        factory,
        headers={"Authorization": f"Bearer {api_key}"},
        expect=EXPECT[op],
    )
    own1 = time.process_time()
    cpu1 = sum(process_cpu_seconds(s.proc.pid) for s in servers)
    calls1, rcpu1 = await command_calls(redis), await redis_cpu_seconds(redis)
    n = max(res.requests + res.errors, 1)
    commands = {
        name: round((calls1[name] - calls0.get(name, 0)) / n, 1)
        for name in calls1
        if name not in _OBSERVER_COMMANDS and calls1[name] != calls0.get(name, 0)
    }
    return Sample(
        res,
        server_cpu_ms=(cpu1 - cpu0) / n * 1000,
        redis_cpu_us=(rcpu1 - rcpu0) / n * 1e6,
        client_cpu_ms=(own1 - own0) / n * 1000,
        commands={k: v for k, v in commands.items() if v},
    )


@dataclass
class Sample:
    """One load's result; CPU per request of the servers (all together), of Redis, and of the
    load generator (this process); Redis commands run per request, by name."""

    load: LoadResult
    server_cpu_ms: float
    redis_cpu_us: float
    client_cpu_ms: float
    commands: dict[str, float]


_OBSERVER_COMMANDS = frozenset({"info"})  # this benchmark's own


async def command_calls(redis: Redis) -> dict[str, int]:
    """Calls per command since Redis started (``INFO commandstats``)."""
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _record(fig: Figures, sample: Sample) -> None:
    res = sample.load
    fig.rates.append(res.rate)
    fig.latencies += res.latencies_ms
    fig.server_cpu_ms.append(sample.server_cpu_ms)
    fig.redis_cpu_us.append(sample.redis_cpu_us)
    fig.client_cpu_ms.append(sample.client_cpu_ms)
    fig.commands = fig.commands or sample.commands
    fig.errors += res.errors
    fig.first_error = fig.first_error or res.first_error


def same_commands(ours: dict[str, float], minimal: dict[str, float]) -> bool:
    """Whether two apps sent Redis the same commands per request (within 0.1 of a call: the
    last requests of a load can straddle its counter reads)."""
    names = set(ours) | set(minimal)
    return all(abs(ours.get(k, 0.0) - minimal.get(k, 0.0)) <= 0.1 for k in names)


async def run(
    redis_url: str, *, seconds: float = 5.0, rounds: int = 3, clients: int = CLIENTS
) -> list[Result]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        await redis.flushall()
        api_key = await prepare(redis, clients)
        figures = {(app, op): Figures() for app in ROUTES for op in EXPECT}
        env = api_env(redis_url)
        with ExitStack() as stack:
            port, mini_port = free_port(), free_port()
            ours = stack.enter_context(server("API", api_command(port), env, port))
            mini = stack.enter_context(
                server("minimal app", minimal_command(mini_port), env, mini_port)
            )
            await asyncio.gather(wait_ready(ours), wait_ready(mini))
            apps = {"ours": ours, "minimal": mini}
            for r in range(rounds + 1):  # round 0 warms both up
                for op in ("send", "read"):
                    order = ("ours", "minimal") if r % 2 else ("minimal", "ours")
                    for app in order:
                        sample = await measure(
                            [apps[app]], redis, api_key, app, op, clients, seconds if r else 1.0
                        )
                        if r:
                            _record(figures[app, op], sample)
                        if sample.load.requests == 0:
                            raise RuntimeError(
                                f"{app} {op}: no request succeeded: {sample.load.first_error}"
                            )
                    await drain_queues(redis)
    finally:
        await redis.aclose()
    return _results(figures, clients, seconds, rounds)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def _results(
    figures: dict[tuple[str, str], Figures], clients: int, seconds: float, rounds: int
) -> list[Result]:
    out: list[Result] = []
    titles = {"send": "send a message", "read": "read 1,000 events"}
    for op in ("send", "read"):
        ours, mini = figures["ours", op], figures["minimal", op]
        if not same_commands(ours.commands, mini.commands):
            raise RuntimeError(
                f"{op}: the apps sent Redis different commands per request: ours "
                f"{ours.commands}, minimal {mini.commands}"
            )
        commands = ", ".join(f"{k} {v:g}" for k, v in sorted(ours.commands.items()))
        cpu_note = (
            f"CPU per request: API {_median(ours.server_cpu_ms):.2f} ms "
            f"(minimal {_median(mini.server_cpu_ms):.2f}), Redis "
            f"{_median(ours.redis_cpu_us):.0f} µs (minimal {_median(mini.redis_cpu_us):.0f})"
        )
        errors = ours.errors + mini.errors
        notes = (
            f"{clients} clients, best of {rounds} x {seconds:g} s; {cpu_note}; Redis commands per "
            f"request, both apps (scripts' included): {commands}"
        )
        if op == "send":
            notes += "; no worker runs (turn jobs queue up, emptied between rounds)"
        if errors:
            notes += f"; {errors} failed requests, first: {ours.first_error or mini.first_error}"
        extra: dict[str, Any] = {
            "api_cpu_ms": _median(ours.server_cpu_ms),
            "minimal_cpu_ms": _median(mini.server_cpu_ms),
            "redis_cpu_us": _median(ours.redis_cpu_us),
            "minimal_redis_cpu_us": _median(mini.redis_cpu_us),
        }
        out.append(
            Result("api", f"{titles[op]}: throughput, 1 API process", max(ours.rates), "req/s",
                   max(mini.rates), "minimal FastAPI app, same Redis commands", ">= 0.70",
                   notes=notes, extra=extra)
        )  # fmt: skip
        for pct in (50, 99):
            out.append(
                Result("api", f"{titles[op]}: p{pct} latency", percentile(ours.latencies, pct),
                       "ms", percentile(mini.latencies, pct), "minimal FastAPI app",
                       higher_is_better=False, notes="all measured rounds pooled")
            )  # fmt: skip
    return out


# --- scale-out ---------------------------------------------------------------------------------
async def send_scaling(
    redis_url: str, *, processes: tuple[int, ...] = (1, 2), seconds: float = 5.0, rounds: int = 3,
    clients: int = CLIENTS,
) -> dict[int, dict[str, float]]:  # fmt: skip
    """Send throughput with 1, 2, ... API processes on their own ports, the clients split between
    them (no load balancer in between). Returns per process count: best req/s, p50/p99 ms, API
    CPU ms per request, Redis CPU µs per request."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    out: dict[int, dict[str, float]] = {}
    try:
        await redis.flushall()
        api_key = await prepare(redis, clients)
        env = api_env(redis_url)
        with ExitStack() as stack:
            servers = []
            for _ in range(max(processes)):
                port = free_port()
                srv = stack.enter_context(server("API", api_command(port), env, port))
                servers.append(srv)
            await asyncio.gather(*(wait_ready(s) for s in servers))
            figs = {n: Figures() for n in processes}
            for r in range(rounds + 1):
                for n in processes if r % 2 else tuple(reversed(processes)):
                    sample = await measure(
                        servers[:n], redis, api_key, "ours", "send", clients, seconds if r else 1.0
                    )
                    if r:
                        _record(figs[n], sample)
                    await drain_queues(redis)
        for n, fig in figs.items():
            out[n] = {
                "req_per_s": max(fig.rates),
                "p50_ms": percentile(fig.latencies, 50),
                "p99_ms": percentile(fig.latencies, 99),
                "api_cpu_ms_per_req": _median(fig.server_cpu_ms),
                "redis_cpu_us_per_req": _median(fig.redis_cpu_us),
                "load_generator_cpu_ms_per_req": _median(fig.client_cpu_ms),
                "errors": fig.errors,
            }
    finally:
        await redis.aclose()
    return out


async def main() -> None:  # pragma: no cover - manual runs
    from bench.common import private_redis

    with private_redis() as url:
        for res in await run(url, seconds=3, rounds=2):
            print(res)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
