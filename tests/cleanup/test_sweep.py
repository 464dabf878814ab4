"""The expiry sweep on a real Redis: TTL expiry, exact index, one ``session.expired`` each."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from service import keys as K
from service.cleanup import apply_retention
from service.store import Store
from service.store.hub import trimmed_past
from service.sweep import sweep_expired
from service.tenants import Retention, Tenant
from tests.cleanup.conftest import PREFIX, lifecycle, seed, tenant_keys, user


async def test_expired_sessions_leave_nothing_and_announce_once(
    store: Store, real_redis: Redis
) -> None:
    acme = store.tenant("acme")
    short = await seed(acme, 20, prefix="short", ttl_seconds=1)
    for sid in short[:5]:
        await acme.set_bookmark(sid, "b1")
        await acme.append(sid, [user("hi")], idempotency_key="k", enqueue_turn=True)
    await seed(acme, 5, prefix="inf", infinite=True)
    await seed(acme, 5, prefix="live")
    side = await tenant_keys(real_redis, "acme")
    assert any(k.endswith(":idem") for k in side) and any(k.endswith(":turns") for k in side)
    assert any(k.endswith(":bookmarks") for k in side)
    await asyncio.sleep(1.2)

    first = await sweep_expired(store, ["acme"])
    second = await sweep_expired(store, ["acme"])
    assert first.total == 20 and first.alive == 0
    assert second.total == 0

    keys = await tenant_keys(real_redis, "acme")
    assert not any("short" in k for k in keys), keys
    idx = K.index_keys(PREFIX, "acme", 0)
    indexed = set(await real_redis.zrange(idx.idx, 0, -1))
    assert indexed == {f"inf{i:03d}" for i in range(5)} | {f"live{i:03d}" for i in range(5)}
    assert set(await real_redis.zrange(idx.exp, 0, -1)) == {f"live{i:03d}" for i in range(5)}
    expired = [
        sid for kind, sid in await lifecycle(real_redis, "acme") if kind == "session.expired"
    ]
    assert sorted(expired) == short
    assert await acme.count_live() == 10


async def test_overlapping_sweeps_emit_one_event_per_session(
    store: Store, real_redis: Redis
) -> None:
    for shards in (1, 4):
        await real_redis.flushall()
        sharded = Store(real_redis, prefix=PREFIX, index_shards=shards)
        ts = sharded.tenant("acme")
        ids = await seed(ts, 60, events=0, ttl_seconds=1)
        await asyncio.sleep(1.2)
        reports = await asyncio.gather(
            *(sweep_expired(sharded, ["acme"], batch=7, concurrency=4) for _ in range(4))
        )
        assert sum(r.total for r in reports) == 60
        expired = [
            s for kind, s in await lifecycle(real_redis, "acme") if kind == "session.expired"
        ]
        assert sorted(expired) == ids
        # only the tenant's shared streams remain (lifecycle, and live events until trimmed)
        assert await tenant_keys(real_redis, "acme") == sorted(
            [K.lifecycle_key(PREFIX, "acme"), K.live_key(PREFIX, "acme", 0)]
        )


async def test_sweep_after_delete_emits_nothing(store: Store, real_redis: Redis) -> None:
    acme = store.tenant("acme")
    await seed(acme, 2, events=0, ttl_seconds=1)
    await acme.delete("s000")
    await asyncio.sleep(1.2)
    report = await sweep_expired(store, ["acme"])
    assert report.total == 1
    events = await lifecycle(real_redis, "acme")
    assert [e for e in events if e[0] != "session.created"] == [
        ("session.deleted", "s000"),
        ("session.expired", "s001"),
    ]


async def test_sweep_leaves_live_sessions_alone_even_with_a_late_clock(
    store: Store, real_redis: Redis
) -> None:
    """A sweeper whose clock runs ahead sees live sessions as past their deadline: it must
    confirm with the session's own keys and leave them."""
    acme = store.tenant("acme")
    await seed(acme, 10, events=1)
    report = await sweep_expired(store, ["acme"], now_ms=2**50, batch=3)
    assert report.total == 0 and report.alive == 10
    assert await acme.count_live() == 10
    assert all(kind == "session.created" for kind, _ in await lifecycle(real_redis, "acme"))


async def test_no_automatic_job_touches_infinite_sessions(store: Store, real_redis: Redis) -> None:
    acme = store.tenant("acme")
    infinite = await seed(acme, 6, prefix="inf", infinite=True)
    await seed(acme, 4, prefix="fin", ttl_seconds=1)
    await asyncio.sleep(1.2)
    await sweep_expired(store, ["acme"])
    tenant = Tenant(
        id="acme",
        name="acme",
        created_at_ms=0,
        retention=Retention(max_age_seconds=60, max_idle_seconds=60, max_sessions=1),
    )
    far_future = 2**45
    report = await apply_retention(store, tenant, now_ms=far_future)
    assert report.counts()["deleted"] == 0
    for sid in infinite:
        info = await acme.get(sid)
        assert info.infinite and info.event_count == 2  # session.start is not history
    assert await real_redis.ttl(K.session_keys(PREFIX, "acme", infinite[0]).meta) == -1


async def test_the_sweep_trims_an_idle_tenants_live_window_exactly(real_redis: Redis) -> None:
    """Writes trim the live window by whole stream nodes, and only while the tenant writes: the
    sweep drops what is past the window's time, so a deleted session's live copies do not stay
    (in any shard), and keeps what is within it."""
    store = Store(real_redis, prefix=PREFIX, live_window_seconds=60, live_shards=3)
    acme = store.tenant("acme")
    ids = await seed(acme, 6, prefix="gone")
    for sid in ids:
        await acme.append(sid, [user("my card number is 4111")])
        await acme.delete(sid)
    shards = [K.live_key(PREFIX, "acme", s) for s in range(3)]
    held = [await real_redis.xlen(key) for key in shards]
    assert sum(held) > 0  # nothing trims an idle tenant's window by itself
    stamps = [
        int(entry_id.split("-")[0])
        for key in shards
        for entry_id, _ in await real_redis.xrange(key)
    ]
    kept = await sweep_expired(store, ["acme"], now_ms=min(stamps) + 60_000)  # all within
    assert kept.trimmed == 0 and [await real_redis.xlen(key) for key in shards] == held
    newest = [(await real_redis.xrevrange(key, count=1) or [(None, {})])[0][0] for key in shards]
    report = await sweep_expired(store, ["acme"], now_ms=max(stamps) + 60_001)  # all past
    assert report.trimmed == sum(held) and report.to_json()["trimmed"] == sum(held)
    # a stream does not go empty: a marker without content stands in for its newest entry, so
    # a reader behind the window still sees the gap (the next entry's p names the marker)
    for key, last in zip(shards, newest, strict=True):
        rows = await real_redis.xrange(key)
        assert [f for _, f in rows] == ([{"s": "", "p": last}] if last else [])
        if last:
            assert trimmed_past(f"{min(stamps) - 1}-0", rows[0][1])
    again = await sweep_expired(store, ["acme"], now_ms=max(stamps) + 120_000)
    assert again.trimmed == 0  # an idle stream's marker stays as it is
    assert [await real_redis.xlen(key) for key in shards] == [min(n, 1) for n in held]
