"""How throughput grows with API processes and workers, and what each tier costs in CPU.

- API: send throughput (``bench.api_bench``'s send load, 32 clients) against 1 and against 2
  API processes on their own ports, the clients split between them (no load balancer).
- Workers: turn throughput with 1 and with 2 worker processes, ``bench.turn_bench``'s
  saturated worker load (50 sessions sending their next prompt as soon as the previous turn's
  ``session.idle`` arrives, dev model, no model latency).
- CPU per operation of each tier (process user+system time; Redis ``used_cpu_*``), from which
  docs/scaling.md works out what a core of each tier carries; and for Redis, the CPU per store
  append on one redis-server against a 3-node cluster, with how evenly the nodes share it.

Run: ``.venv/bin/python -m bench.scaling_bench [--quick]`` (starts its own redis-server), or
``python -m bench --only scaling``. On a 2-core machine the load generator, the servers and Redis
share the cores: the figures show where a tier stops scaling on this machine, and the CPU costs
say what more cores would carry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import api_bench, cluster_bench, store_bench, turn_bench
from bench.api_bench import Server, process_cpu_seconds, redis_cpu_seconds, server
from bench.common import Result, private_redis
from service.embedded import RedisClusterProcesses
from service.store import Store

WORKER_ENV = {"SESSIONS_KEY_PREFIX": "tb", "SESSIONS_LOG_LEVEL": "WARNING"}


def worker_command() -> list[str]:
    return [sys.executable, "-m", "service.cli.main", "worker"]


async def worker_scaling(
    redis_url: str,
    *,
    workers: tuple[int, ...] = (1, 2),
    rounds: int = 2,
    queue_url: str | None = None,
) -> dict[int, dict[str, float]]:
    """Saturated turns/s with each number of worker processes (best of ``rounds``), with worker
    CPU ms per turn and Redis CPU µs per turn (everything a turn makes Redis do: append and
    enqueue, the job, the reply, the follower's reads). With ``queue_url`` the arq queue lives
    on that second redis-server, and its CPU per turn is reported apart."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = Redis.from_url(queue_url, decode_responses=True) if queue_url else None
    out: dict[int, dict[str, float]] = {}
    round_no = 0
    saved = os.environ.get("SESSIONS_QUEUE_REDIS_URL")
    try:
        await redis.flushall()
        extra = dict(WORKER_ENV)
        if queue is not None and queue_url is not None:
            await queue.flushall()
            extra["SESSIONS_QUEUE_REDIS_URL"] = queue_url
            os.environ["SESSIONS_QUEUE_REDIS_URL"] = queue_url  # this process's enqueues too
        env = api_bench.api_env(redis_url, **extra)
        for n in workers:
            with ExitStack() as stack:
                procs: list[Server] = [
                    stack.enter_context(server("worker", worker_command(), env, 0))
                    for _ in range(n)
                ]
                await asyncio.sleep(1.0)
                round_no += 1
                await turn_bench._worker_latencies(redis_url, round_no, paced=False)  # warm-up
                rates, cpu, rcpu, qcpu, own = [], [], [], [], []
                calls0, turns = await _command_calls(redis), 0
                for _ in range(rounds):
                    round_no += 1
                    c0 = sum(process_cpu_seconds(p.proc.pid) for p in procs)
                    r0 = await redis_cpu_seconds(redis)
                    q0 = await redis_cpu_seconds(queue) if queue is not None else 0.0
                    own0 = time.process_time()
                    start = time.perf_counter()
                    samples = await turn_bench._worker_latencies(redis_url, round_no, paced=False)
                    rates.append(len(samples) / (time.perf_counter() - start))
                    own.append((time.process_time() - own0) / len(samples) * 1000)
                    c1 = sum(process_cpu_seconds(p.proc.pid) for p in procs)
                    r1 = await redis_cpu_seconds(redis)
                    q1 = await redis_cpu_seconds(queue) if queue is not None else 0.0
                    cpu.append((c1 - c0) / len(samples) * 1000)
                    rcpu.append((r1 - r0) / len(samples) * 1e6)
                    qcpu.append((q1 - q0) / len(samples) * 1e6)
                    turns += len(samples)
                calls1 = await _command_calls(redis)
                per_turn = {
                    cmd: (calls1[cmd] - calls0.get(cmd, 0)) / turns
                    for cmd in calls1
                    if cmd not in ("info", "config")
                }
                top = sorted(per_turn.items(), key=lambda kv: -kv[1])[:8]
                out[n] = {
                    "turns_per_s": max(rates),
                    "worker_cpu_ms_per_turn": min(cpu),
                    "redis_cpu_us_per_turn": min(rcpu),
                    "driver_cpu_ms_per_turn": min(own),
                    "redis_commands_per_turn": sum(per_turn.values()),
                    **{f"commands_per_turn_{cmd}": v for cmd, v in top},
                }
                if queue is not None:
                    out[n]["queue_redis_cpu_us_per_turn"] = min(qcpu)
    finally:
        if saved is None:
            os.environ.pop("SESSIONS_QUEUE_REDIS_URL", None)
        else:
            os.environ["SESSIONS_QUEUE_REDIS_URL"] = saved
        await redis.aclose()
        if queue is not None:
            await queue.aclose()
    return out


async def _command_calls(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def _append_load(store: Store, sessions: int, writers: int, per_writer: int) -> int:
    """``writers`` concurrent writers over ``sessions`` sessions, one message per append."""
    tenant = store.tenant("bench")

    async def writer(w: int) -> None:
        sid = f"s{w % sessions}"
        for i in range(per_writer):
            await tenant.append(sid, [store_bench._message(i)])

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return writers * per_writer


async def redis_cost_per_append(redis_url: str, *, per_writer: int = 100) -> dict[str, float]:
    """Redis CPU µs per ``TenantStore.append`` on one redis-server (32 writers, 32 sessions):
    what one Redis core can carry, whatever the number of API processes and workers."""
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=64)
    try:
        await redis.flushall()
        store = Store(redis, prefix="sc", default_ttl=3600)
        for s in range(32):
            await store.tenant("bench").create(f"s{s}", model="m")
        await _append_load(store, 32, 32, 20)  # warm-up
        r0, t0 = await redis_cpu_seconds(redis), time.perf_counter()
        n = await _append_load(store, 32, 32, per_writer)
        r1, t1 = await redis_cpu_seconds(redis), time.perf_counter()
    finally:
        await redis.aclose()
    return {"appends_per_s": n / (t1 - t0), "redis_cpu_us_per_append": (r1 - r0) / n * 1e6}


async def cluster_split(
    startup_nodes: str, *, sessions: int = 256, per_writer: int = 50
) -> dict[str, float]:
    """Appends over many sessions on a 3-node cluster (``index_shards=16``): Redis CPU µs per
    append summed over the nodes, and the busiest node's share of it."""
    redis: Any = cluster_bench.connect(startup_nodes)
    nodes = [
        Redis(host=h, port=int(p), decode_responses=True)
        for h, _, p in (n.rpartition(":") for n in startup_nodes.split(","))
    ]
    try:
        await redis.initialize()
        await redis.flushall()
        store = Store(redis, prefix="sc", default_ttl=3600, index_shards=cluster_bench.SHARDS)
        for s in range(sessions):
            await store.tenant("bench").create(f"s{s}", model="m")
        await _append_load(store, sessions, 64, 10)  # warm-up
        before = [await redis_cpu_seconds(n) for n in nodes]
        t0 = time.perf_counter()
        n = await _append_load(store, sessions, 64, per_writer)
        seconds = time.perf_counter() - t0
        used = [await redis_cpu_seconds(node) - b for node, b in zip(nodes, before, strict=True)]
    finally:
        await redis.aclose()
        for node in nodes:
            await node.aclose()
    total = sum(used)
    return {
        "appends_per_s": n / seconds,
        "redis_cpu_us_per_append": total / n * 1e6,
        "busiest_node_share": max(used) / total if total else float("nan"),
    }


async def run(redis_url: str, *, quick: bool = False) -> list[Result]:
    seconds, rounds = (2.0, 1) if quick else (5.0, 3)
    if quick:
        turn_bench.TURNS_PER_SESSION = 4
    api = await api_bench.send_scaling(redis_url, seconds=seconds, rounds=rounds)
    turns = await worker_scaling(redis_url, rounds=1 if quick else 2)
    with private_redis() as queue_url:
        apart = await worker_scaling(
            redis_url, workers=(1,), rounds=1 if quick else 2, queue_url=queue_url
        )
    single = await redis_cost_per_append(redis_url, per_writer=30 if quick else 100)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = RedisClusterProcesses(Path(tmp)).start()
        try:
            split = await cluster_split(cluster.startup_nodes, per_writer=10 if quick else 50)
        finally:
            cluster.stop()
    out = [
        Result("scaling", "send throughput, 2 API processes", api[2]["req_per_s"], "req/s",
               api[1]["req_per_s"], "1 API process",
               notes=f"32 clients split between the processes; p50 {api[2]['p50_ms']:.0f} ms "
                     f"(1 process: {api[1]['p50_ms']:.0f}); API CPU "
                     f"{api[1]['api_cpu_ms_per_req']:.2f} ms/req, Redis "
                     f"{api[1]['redis_cpu_us_per_req']:.0f} µs/req, load generator "
                     f"{api[1]['load_generator_cpu_ms_per_req']:.2f} ms/req",
               extra={f"{k}_{n}": v for n, d in api.items() for k, v in d.items()}),
        Result("scaling", "turn throughput, 2 workers", turns[2]["turns_per_s"], "turns/s",
               turns[1]["turns_per_s"], "1 worker",
               notes=f"saturated, {turn_bench.SESSIONS} sessions, dev model; worker CPU "
                     f"{turns[1]['worker_cpu_ms_per_turn']:.2f} ms/turn, Redis "
                     f"{turns[1]['redis_cpu_us_per_turn']:.0f} µs/turn "
                     f"({turns[1]['redis_commands_per_turn']:.0f} commands), driver "
                     f"{turns[1]['driver_cpu_ms_per_turn']:.2f} ms/turn",
               extra={f"{k}_{n}": v for n, d in turns.items() for k, v in d.items()}),
        Result("scaling", "Redis CPU per turn, queue on its own redis-server: data + queue",
               apart[1]["redis_cpu_us_per_turn"] + apart[1]["queue_redis_cpu_us_per_turn"],
               "µs", turns[1]["redis_cpu_us_per_turn"], "data and queue on one redis-server",
               higher_is_better=False,
               notes=f"1 worker, saturated; data Redis {apart[1]['redis_cpu_us_per_turn']:.0f} "
                     f"µs/turn, queue Redis {apart[1]['queue_redis_cpu_us_per_turn']:.0f} "
                     f"µs/turn; {apart[1]['turns_per_s']:.0f} turns/s",
               extra={f"{k}_apart": v for k, v in apart[1].items()}),
        Result("scaling", "Redis CPU per append, 3-node cluster (sum of nodes)",
               split["redis_cpu_us_per_append"], "µs", single["redis_cpu_us_per_append"],
               "one redis-server", higher_is_better=False,
               notes=f"256 sessions, 64 writers, index_shards=16; busiest node's share of the "
                     f"cluster's Redis CPU: {split['busiest_node_share']:.0%}; appends/s: "
                     f"{split['appends_per_s']:.0f} cluster, {single['appends_per_s']:.0f} single "
                     "(client-bound on this machine)",
               extra={**{f"single_{k}": v for k, v in single.items()},
                      **{f"cluster_{k}": v for k, v in split.items()}}),
    ]  # fmt: skip
    return out


async def main() -> None:  # pragma: no cover - manual runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    with private_redis() as url:
        results = await run(url, quick=args.quick)
    for res in results:
        print(f"{res.name}: {res.ours:.1f} {res.unit} vs {res.baseline_name} {res.baseline:.1f}")
        print(f"  {res.notes}")
        for key, value in res.extra.items():
            print(f"  {key}: {value:.2f}")


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
