"""Cleanup fixtures: a store on the real Redis, seeding helpers, and the operator commands run
in-process (sync tests: a command calls ``asyncio.run`` itself) or as a subprocess."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from service import keys as K
from service.config import Settings
from service.models import NewEvent
from service.store import Store, TenantStore

PREFIX = "ct"
ENTRY = Path(__file__).with_name("cli_entry.py")


def user(text: str) -> NewEvent:
    return NewEvent(type="user.message", data={"content": text})


def assistant(text: str) -> NewEvent:
    return NewEvent(type="assistant.message", data={"content": text})


@pytest.fixture
def store(real_redis: Redis) -> Store:
    return Store(real_redis, prefix=PREFIX, default_ttl=3600, max_event_bytes=64 * 1024)


@pytest.fixture
def settings(redis_server_url: str) -> Settings:
    return Settings(redis_url=redis_server_url, key_prefix=PREFIX)


@pytest.fixture
def cli_env(redis_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A flushed Redis and the environment the commands read their settings from."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    monkeypatch.setenv("SESSIONS_REDIS_URL", redis_server_url)
    monkeypatch.setenv("SESSIONS_KEY_PREFIX", PREFIX)
    monkeypatch.setenv("SESSIONS_LOG_LEVEL", "WARNING")
    yield redis_server_url


def cli(*argv: str) -> int:
    """Run ``sessionctl <argv>`` in-process with only this package's commands."""
    from service.cli import cleanup, sessions, stats

    parser = argparse.ArgumentParser(prog="sessionctl")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (cleanup, sessions, stats):
        module.register(sub)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    code: int = args.func(args)
    return code


def cli_command(*argv: str, slow_export_ms: int = 0) -> list[str]:
    """The argv of a subprocess running the same commands (``cli_entry.py``)."""
    return [sys.executable, str(ENTRY), "--slow-export-ms", str(slow_export_ms), *argv]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def seed(
    ts: TenantStore,
    count: int,
    *,
    prefix: str = "s",
    events: int = 2,
    labels: dict[str, str] | None = None,
    infinite: bool = False,
    ttl_seconds: int | None = None,
    concurrency: int = 50,
) -> list[str]:
    """``count`` sessions ``<prefix>000...`` with ``events`` messages each after the start,
    ``concurrency`` at a time (1: each is modified after the one before, as their ids sort)."""
    ids = [f"{prefix}{i:03d}" for i in range(count)]

    async def one(sid: str) -> None:
        await ts.create(
            sid,
            model="m",
            labels=labels,
            infinite=infinite,
            ttl_seconds=ttl_seconds,
            max_sessions=0,
        )
        if events:
            await ts.append(
                sid,
                [
                    user(f"{sid} q{n}") if n % 2 == 0 else assistant(f"{sid} a{n}")
                    for n in range(events)
                ],
            )

    for start in range(0, count, concurrency):
        await asyncio.gather(*(one(sid) for sid in ids[start : start + concurrency]))
    return ids


async def tenant_keys(client: Redis, tenant: str) -> list[str]:
    prefix = K.tenant_prefix(PREFIX, tenant)
    return sorted([k async for k in client.scan_iter(match=prefix + "*")])


async def lifecycle(client: Redis, tenant: str) -> list[tuple[str, str]]:
    rows = await client.xrange(K.lifecycle_key(PREFIX, tenant))
    return [(f["type"], f["session_id"]) for _, f in rows]


def listing(root: Path) -> list[str]:
    """Every file under ``root`` (hidden ones too), as sorted relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
