"""The store against the OpenAI Agents SDK's ``RedisSession`` doing the same work, same Redis,
same run.

The peer runs in its own virtualenv (``.cache/bench-peer-venv``, created on first use with
``pip install 'openai-agents[redis]' hiredis``: the SDK needs redis-py >= 6 while the service
pins redis-py < 6 for arq), driven by ``bench/peer_driver.py`` over a pipe; each side times its
own work in its own process, and the rounds alternate between the two. Both clients have
hiredis. When the virtualenv cannot be made (no network, no PyPI), the benchmark says so and is
skipped.

Work, the same on both sides (160-byte messages, user and assistant in turn, a 1 h sliding TTL
on every key of a session):
- append, 1 writer on 1 session: one message per call, back to back (round trips per append).
- append, 32 writers on 8 sessions (4 per session): concurrent writers of one session, each with
  its own session object, as separate app replicas would be. Ours: ``TenantStore.append`` (one
  EVALSHA). Peer: ``RedisSession.add_items`` (WATCH, TYPE x3, TIME, then MULTI ... EXEC; the
  whole transaction again after a WATCH conflict).
- read a 1,000-message history: ours ``TenantStore.read_messages(limit=1000)`` (a session
  holding 1,000 messages; what ``GET /messages`` reads); peer ``RedisSession.get_items()`` of
  1,000 items (LRANGE + ``json.loads`` each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.common import Result
from bench.store_bench import CONTENT
from service.models import NewEvent
from service.store import Store, TenantStore

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".cache" / "bench-peer-venv"
PEER_PACKAGES = ["openai-agents[redis]", "hiredis"]
DRIVER = Path(__file__).with_name("peer_driver.py")
HISTORY = 1000
READS = 50
ROLES = ("user.message", "assistant.message")


class PeerUnavailable(RuntimeError):
    """The peer's virtualenv could not be made: the benchmark is skipped, not failed."""


def peer_python(install: bool = True) -> Path:
    """The peer virtualenv's interpreter, creating the virtualenv when it is missing."""
    python = PEER_VENV / "bin" / "python"
    probe = [str(python), "-c", "import agents.extensions.memory.redis_session, hiredis"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    if not install:
        raise PeerUnavailable(f"no peer virtualenv at {PEER_VENV}")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(PEER_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--retries", "2", "--timeout", "20", *PEER_PACKAGES],
    ]  # fmt: skip
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"`{' '.join(step)}` failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PeerUnavailable(f"`{' '.join(step)}` failed: {' / '.join(tail)}")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise PeerUnavailable("the peer virtualenv was made but RedisSession does not import")
    return python


class Peer:
    """The driver subprocess: one JSON command line in, one JSON answer line out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, python: Path, redis_url: str) -> Peer:
        proc = await asyncio.create_subprocess_exec(
            str(python), str(DRIVER), redis_url, CONTENT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        return cls(proc)

    async def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            err = b""
            if self.proc.stderr is not None:
                err = await self.proc.stderr.read()
            raise RuntimeError(f"peer driver exited: {err.decode(errors='replace')[-1500:]}")
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"peer driver: {out['error']}")
        return out

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                await self.call(op="quit")
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _event(i: int) -> NewEvent:
    return NewEvent(type=ROLES[i % 2], data={"content": f"{i} {CONTENT}"})


async def _ours_append(tenant: TenantStore, sessions: int, writers: int, per_writer: int) -> int:
    async def writer(sid: str) -> None:
        for i in range(per_writer):
            await tenant.append(sid, [_event(i)])

    await asyncio.gather(*(writer(f"w{s}") for s in range(sessions) for _ in range(writers)))
    return sessions * writers * per_writer


async def _ours_read(tenant: TenantStore) -> int:
    for _ in range(READS):
        messages, _, _ = await tenant.read_messages("hist", limit=HISTORY)
        assert len(messages) == HISTORY
    return READS


async def run(
    redis_url: str, *, rounds: int = 5, single: int = 500, per_writer: int = 50
) -> list[Result]:
    python = await asyncio.to_thread(peer_python)
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=128)
    peer = await Peer.start(python, redis_url)
    try:
        await redis.flushall()
        versions = await peer.call(op="hello")
        tenant = Store(redis, prefix="bench", default_ttl=3600).tenant("bench")
        for s in range(8):
            await tenant.create(f"w{s}", model="m")
        await tenant.create("hist", model="m")
        for i in range(HISTORY):  # one append per event: ids (and timestamps) all differ
            await tenant.append("hist", [_event(i)])
        filled = await peer.call(op="fill", session="hist", items=HISTORY)
        assert filled["n"] == HISTORY, filled

        cases = {
            "single": (1, 1, single),
            "contended": (8, 4, per_writer),
        }
        rates: dict[str, dict[str, list[float]]] = {
            k: {"ours": [], "peer": []} for k in (*cases, "read")
        }
        attempts: list[float] = []
        for r in range(rounds + 1):  # round 0 warms both up
            for name, (sessions, writers, n) in cases.items():
                for side in ("ours", "peer") if r % 2 else ("peer", "ours"):
                    if side == "ours":
                        t0 = time.perf_counter()
                        done = await _ours_append(tenant, sessions, writers, n)
                        rate = done / (time.perf_counter() - t0)
                    else:
                        got = await peer.call(
                            op="append", sessions=sessions, writers=writers, per_writer=n
                        )
                        rate = got["n"] / got["seconds"]
                        if name == "contended" and r:
                            attempts.append(got["attempts"] / got["n"])
                    if r:
                        rates[name][side].append(rate)
            for side in ("ours", "peer") if r % 2 else ("peer", "ours"):
                if side == "ours":
                    t0 = time.perf_counter()
                    done = await _ours_read(tenant)
                    rate = done / (time.perf_counter() - t0)
                else:
                    got = await peer.call(op="read", session="hist", iterations=READS)
                    assert got["items"] == HISTORY, got
                    rate = got["n"] / got["seconds"]
                if r:
                    rates["read"][side].append(rate)
    finally:
        await peer.close()
        await redis.aclose()

    peer_name = (
        f"openai-agents {versions['openai-agents']} RedisSession "
        f"(redis-py {versions['redis']}, hiredis {versions['hiredis']})"
    )
    best = {k: {side: max(v) for side, v in sides.items()} for k, sides in rates.items()}
    per_append = sum(attempts) / len(attempts) if attempts else float("nan")
    return [
        Result("peer", "append, 1 writer on 1 session", best["single"]["ours"], "appends/s",
               best["single"]["peer"], peer_name, ">= 1.00",
               notes=f"{single} appends per round, best of {rounds}; ours 1 round trip per "
                     "append, peer 6 (WATCH, TYPE x3, TIME, MULTI..EXEC)"),
        Result("peer", "append, 32 writers on 8 sessions", best["contended"]["ours"],
               "appends/s", best["contended"]["peer"], peer_name, ">= 1.00",
               notes=f"4 writers per session, {per_writer} appends each; peer transactions "
                     f"per append: {per_append:.2f} (WATCH conflicts retried)",
               extra={"peer_attempts_per_append": per_append}),
        Result("peer", "read 1,000-message history", best["read"]["ours"], "reads/s",
               best["read"]["peer"], peer_name, ">= 1.00",
               notes="ours: read_messages(limit=1000) (GET /messages); peer: get_items()"),
    ]  # fmt: skip


async def main() -> None:  # pragma: no cover - manual runs
    from bench.common import private_redis

    with private_redis() as url:
        for res in await run(url, rounds=2):
            print(res)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
