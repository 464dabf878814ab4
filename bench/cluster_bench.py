"""The store benchmark's append and history read on a real 3-node Redis Cluster.

The same workloads as ``bench.store_bench`` (its functions, unchanged), with a ``Store`` on a
``RedisCluster`` client and ``index_shards=16``: an append is the session script (one slot)
followed by the index update script (the index shard's slot), so two round trips, one after the
other. The baseline sends the same commands through a non-transactional cluster pipeline,
which redis-py splits by node and sends to the nodes at the same time. The history read uses
the cluster client as it comes (redis-py's reply callbacks stay on, see ``service.store``).

The cluster is three primaries on this machine (``service.embedded.RedisClusterProcesses``):
on 2 cores it shows the cost of the cluster path, not the capacity of three servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

from bench import store_bench
from bench.common import Result
from service.store import Store

SHARDS = 16


def connect(startup_nodes: str) -> RedisCluster:
    nodes = []
    for item in startup_nodes.split(","):
        host, _, port = item.strip().rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port)))
    return RedisCluster(startup_nodes=nodes, decode_responses=True)


async def run(startup_nodes: str, repeats: int = 5) -> list[Result]:
    redis: Any = connect(startup_nodes)
    try:
        await redis.initialize()
        await redis.flushall()  # every primary
        store = Store(redis, prefix="bench", default_ttl=3600, index_shards=SHARDS)
        tenant = store.tenant("bench")
        for w in range(store_bench.WRITERS):
            await tenant.create(f"w{w}", model="m")
        ours_rate, raw_rate = await store_bench.append_rates(store, redis, repeats)
        results = [
            Result(
                "cluster",
                "append (32 writers), 3-node cluster",
                ours_rate,
                "appends/s",
                raw_rate,
                "raw redis-py cluster pipeline, same commands",
                ">= 0.70",
                notes=f"index_shards={SHARDS}; ours: session script, then index script",
            )
        ]
        for res in await store_bench._history(redis, store, repeats):
            results.append(
                dataclasses.replace(res, group="cluster", name=f"{res.name}, 3-node cluster")
            )
    finally:
        await redis.aclose()
    return results


async def main() -> None:  # pragma: no cover - manual runs
    import tempfile
    from pathlib import Path

    from service.embedded import RedisClusterProcesses

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = RedisClusterProcesses(Path(tmp)).start()
        try:
            for res in await run(cluster.startup_nodes, repeats=2):
                print(res)
        finally:
            cluster.stop()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
