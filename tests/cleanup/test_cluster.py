"""Sweep, cleanup and retention on a real 3-node Redis Cluster, where the index lives in other
slots than the sessions (the index is updated after each session script)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service import keys as K
from service.cleanup import Options, apply_retention, run_cleanup
from service.export import read_export
from service.retention import Filter
from service.store import Store
from service.sweep import sweep_expired
from service.tenants import Retention, Tenant
from tests.cleanup.conftest import PREFIX, lifecycle, listing, seed
from tests.conftest import cluster_client


async def test_sweep_cleanup_and_retention_on_a_cluster(
    redis_cluster_nodes: str, tmp_path: Path
) -> None:
    client = await cluster_client(redis_cluster_nodes)
    try:
        store = Store(client, prefix=PREFIX, index_shards=4, default_ttl=3600)
        acme = store.tenant("acme")
        short = await seed(acme, 30, prefix="short", events=1, ttl_seconds=1)
        await seed(acme, 3, prefix="inf", events=1, infinite=True)
        await seed(acme, 6, prefix="keep", events=3, labels={"old": "1"})
        await asyncio.sleep(1.2)

        reports = await asyncio.gather(*(sweep_expired(store, ["acme"], batch=4) for _ in range(3)))
        assert sum(r.total for r in reports) == 30
        events = await lifecycle(client, "acme")
        assert sorted(s for kind, s in events if kind == "session.expired") == short
        for shard in range(4):
            idx = K.index_keys(PREFIX, "acme", shard)
            assert not set(await client.zrange(idx.idx, 0, -1)) & set(short)
            assert not set(await client.zrange(idx.exp, 0, -1)) & set(short)

        report = await run_cleanup(
            store, ["acme"], Filter(labels={"old": "1"}), limit=2,
            options=Options(export_dir=tmp_path, gzip=True),
        )  # fmt: skip
        assert report.counts()["deleted"] == 2
        for name in listing(tmp_path):
            session, exported = read_export(tmp_path / name)
            assert len(exported) == 3 and session["labels"] == {"old": "1"}

        assert await acme.count_live() == 7 and await acme.count_finite_live() == 4
        tenant = Tenant(id="acme", name="a", created_at_ms=0, retention=Retention(max_sessions=1))
        evicted = await apply_retention(store, tenant)
        assert evicted.counts()["deleted"] == 3
        assert await acme.count_live() == 4 and await acme.count_finite_live() == 1
        kinds = [kind for kind, _ in await lifecycle(client, "acme")]
        assert kinds.count("session.deleted") == 5 and kinds.count("session.expired") == 30
    finally:
        await client.aclose()
