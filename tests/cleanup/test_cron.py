"""The worker's cron jobs, called as arq calls them (``ctx["runtime"]``), on a real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from service.runtime import Runtime
from service.tenants import Retention
from tests.cleanup.conftest import lifecycle, seed
from workers import cron_jobs as cron


async def test_sweep_job_covers_every_registered_tenant(
    runtime: Runtime, real_redis: Redis
) -> None:
    for name in ("acme", "globex"):
        await runtime.tenants.create(name)
        await seed(runtime.store.tenant(name), 3, events=0, ttl_seconds=1)
        await seed(runtime.store.tenant(name), 1, prefix="inf", events=0, infinite=True)
    await asyncio.sleep(1.2)
    result = await cron.sweep_expired_job({"runtime": runtime})
    assert result["swept"] == 6 and result["tenants"] == {"acme": 3, "globex": 3}
    assert (await cron.sweep_expired_job({"runtime": runtime}))["swept"] == 0
    for name in ("acme", "globex"):
        kinds = [k for k, _ in await lifecycle(real_redis, name)]
        assert kinds.count("session.expired") == 3
        assert await runtime.store.tenant(name).count_live() == 1


async def test_retention_job_applies_each_tenants_rules(
    runtime: Runtime, real_redis: Redis
) -> None:
    await runtime.tenants.create("capped", retention=Retention(max_sessions=2))
    await runtime.tenants.create("free")
    for name in ("capped", "free"):
        await seed(runtime.store.tenant(name), 2, prefix="inf", events=0, infinite=True)
        await seed(runtime.store.tenant(name), 5, events=0)
    result = await cron.apply_retention_job({"runtime": runtime})
    assert result["counts"]["deleted"] == 3 and result["tenants"] == {
        "capped": {**result["counts"]}
    }
    assert await runtime.store.tenant("capped").count_live() == 4
    assert await runtime.store.tenant("free").count_live() == 7
    deleted = [s for k, s in await lifecycle(real_redis, "capped") if k == "session.deleted"]
    assert len(deleted) == 3 and not any(s.startswith("inf") for s in deleted)
