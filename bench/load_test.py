"""Load test: simulated users on create / send / read / list / delete, against one API process and
one worker process on a private redis-server, for a fixed time.

Each user owns one session at a time: it creates it, then repeats (send a prompt, read the
conversation, list its tenant's sessions) with a think time, and after ``TURNS`` turns deletes the
session and starts a new one, so the data set reaches a steady state and Redis memory should stay
flat after warm-up. Every request must succeed; latencies and memory are sampled.

    .venv/bin/python -m bench.load_test --users 200 --seconds 600 --out bench/load-results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.common import machine_notes, percentile, private_redis
from bench.turn_bench import processes
from service.embedded import free_port
from service.tenants import TenantRegistry

TURNS = 8
THINK_S = (0.5, 2.5)
TENANTS = 4


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []

    async def call(self, op: str, request: Any) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response: httpx.Response = await request
        except httpx.HTTPError as exc:
            self._error(op, f"{op}: {type(exc).__name__}: {exc}")
            return None
        self.latency[op].append((time.perf_counter() - start) * 1000)
        if response.status_code >= 400:
            self._error(op, f"{op}: {response.status_code} {response.text[:200]}")
            return None
        return response

    def _error(self, op: str, text: str) -> None:
        self.errors[op] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(text)


async def user(n: int, base: str, key: str, stats: Stats, stop: float) -> None:
    """One simulated user with a connection of its own, as a user of an app replica has: one
    client shared by hundreds of users would measure httpcore's pool, whose every request
    walks all of its connections (most of the driver's CPU at 200 users), not the service."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await _user(n, http, key, stats, stop)


async def _user(n: int, http: httpx.AsyncClient, key: str, stats: Stats, stop: float) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    generation = 0
    await asyncio.sleep(random.uniform(0, THINK_S[1]))  # spread the start
    while time.monotonic() < stop:
        sid = f"u{n}-g{generation}"
        generation += 1
        r = await stats.call(
            "create", http.post("/v1/sessions", json={"session_id": sid}, headers=headers)
        )
        if r is None:
            await asyncio.sleep(1)
            continue
        for turn in range(TURNS):
            if time.monotonic() >= stop:
                break
            prompt = {"prompt": f"user {n} turn {turn}: " + "plan the next step " * 5}
            await stats.call(
                "send", http.post(f"/v1/sessions/{sid}/messages", json=prompt, headers=headers)
            )
            await asyncio.sleep(random.uniform(*THINK_S))
            await stats.call("read", http.get(f"/v1/sessions/{sid}/messages", headers=headers))
            if turn % 3 == 0:
                await stats.call(
                    "list", http.get("/v1/sessions", params={"limit": 20}, headers=headers)
                )
        await stats.call("delete", http.delete(f"/v1/sessions/{sid}", headers=headers))


async def sample_memory(redis: Redis, series: list[tuple[float, int, int]], stop: float) -> None:
    start = time.monotonic()
    while time.monotonic() < stop:
        info = await redis.info("memory")
        keys = await redis.dbsize()
        series.append((round(time.monotonic() - start, 1), int(info["used_memory"]), keys))
        await asyncio.sleep(10)


async def run(users: int, seconds: float) -> dict[str, Any]:
    with private_redis() as url:
        redis = Redis.from_url(url, decode_responses=True)
        registry = TenantRegistry(redis, "load")
        keys = [(await registry.create(f"load{i}"))[1] for i in range(TENANTS)]
        port = free_port()
        env_prefix = {"SESSIONS_KEY_PREFIX": "load"}
        stats = Stats()
        series: list[tuple[float, int, int]] = []
        with processes(url, ["worker"], ["serve", "--port", str(port)], env=env_prefix):
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                for _ in range(200):
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
            stop = time.monotonic() + seconds
            started = time.monotonic()
            await asyncio.gather(
                sample_memory(redis, series, stop),
                *(user(n, base, keys[n % TENANTS], stats, stop) for n in range(users)),
            )
            elapsed = time.monotonic() - started
        await redis.aclose()
    requests = sum(len(v) for v in stats.latency.values())
    warm = [m for t, m, _ in series if t >= min(120, seconds / 3)]
    third = max(1, len(warm) // 3)
    return {
        "users": users,
        "seconds": round(elapsed, 1),
        "requested_seconds": seconds,
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "errors": dict(stats.errors),
        "error_samples": stats.error_samples,
        "latency_ms": {
            op: {
                "count": len(v),
                "p50": round(percentile(v, 50), 1),
                "p95": round(percentile(v, 95), 1),
                "p99": round(percentile(v, 99), 1),
            }
            for op, v in sorted(stats.latency.items())
        },
        "memory": [{"t_s": t, "used_bytes": m, "keys": k} for t, m, k in series],
        "memory_after_warmup": {
            "min": min(warm) if warm else None,
            "max": max(warm) if warm else None,
            "late_vs_early": (sum(warm[-third:]) / sum(warm[:third]) - 1) if warm else None,
        },
        "machine": machine_notes(),
        "date": time.strftime("%Y-%m-%d"),
    }


LOAD_RESULTS = Path(__file__).with_name("load-results.json").resolve()
LOAD_HEADING = "\n## load:"


def update_results_md() -> None:
    """Replace the load section of bench/RESULTS.md (the rest is written by ``python -m bench``)
    with this run's figures."""
    from bench.__main__ import RESULTS, load_test_section

    if not RESULTS.exists():
        return
    text = RESULTS.read_text()
    head = text.split(LOAD_HEADING, 1)[0].rstrip("\n")
    RESULTS.write_text(head + "\n" + "\n".join(load_test_section()) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--out", type=Path, default=Path("bench/load-results.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args.users, args.seconds))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.out.resolve() == LOAD_RESULTS:
        update_results_md()
    print(json.dumps({k: v for k, v in result.items() if k != "memory"}, indent=2))
    if sum(result["errors"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
