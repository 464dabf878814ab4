"""Session limits and index convergence on a real Redis and on the real 3-node Cluster: the
limit counts every index shard and holds under concurrent creates; late index updates cannot
bring a deleted session back or hide an expiry; a gone session's entries are repaired away;
changing the number of shards is a migration; a re-created id keeps the earlier expiry's event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from service import keys as K
from service.errors import LimitExceeded
from service.store import Store, TenantStore
from service.store.base import TOMBSTONE_MS
from service.sweep import sweep_expired
from tests.cleanup.conftest import lifecycle
from tests.conftest import cluster_client

PREFIX = "ct"


@pytest.fixture(params=["single", "cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    if request.param == "cluster":
        c: Redis = await cluster_client(request.getfixturevalue("redis_cluster_nodes"))
    else:
        c = Redis.from_url(request.getfixturevalue("redis_server_url"), decode_responses=True)
        await c.flushall()
    try:
        yield c
    finally:
        await c.aclose()


def make_store(client: Redis, shards: int = 4) -> Store:
    return Store(client, prefix=PREFIX, index_shards=shards, default_ttl=3600, seat_grace_ms=500)


async def create_many(ts: TenantStore, ids: list[str], limit: int, **kw: object) -> list[str]:
    async def one(sid: str) -> str | None:
        try:
            await ts.create(sid, model="m", max_sessions=limit, **kw)  # type: ignore[arg-type]
        except LimitExceeded:
            return None
        return sid

    return [s for s in await asyncio.gather(*(one(i) for i in ids)) if s is not None]


async def test_limit_counts_every_index_shard(client: Redis) -> None:
    acme = make_store(client).tenant("acme")
    created = []
    for i in range(8):
        created += await create_many(acme, [f"s{i}"], 2)
    assert len(created) == 2
    assert await acme.count_live() == 2


async def test_concurrent_creates_stop_at_the_limit(client: Redis) -> None:
    acme = make_store(client).tenant("acme")
    created = await create_many(acme, [f"c{i}" for i in range(20)], 5)
    assert len(created) == 5 and await acme.count_live() == 5
    # a delete frees its place; a failed create (conflict) takes none
    await acme.delete(created[0])
    with pytest.raises(Exception, match="already exists"):
        await acme.create(created[1], model="m", max_sessions=5)
    assert len(await create_many(acme, [f"d{i}" for i in range(5)], 5)) == 1
    assert len(await create_many(acme, ["e0"], 5)) == 0


async def test_expired_sessions_free_their_places_and_are_announced(client: Redis) -> None:
    acme = make_store(client).tenant("acme")
    short = await create_many(acme, [f"x{i}" for i in range(3)], 3, ttl_seconds=1)
    assert len(short) == 3 and not await create_many(acme, ["y0"], 3)
    await asyncio.sleep(1.3)  # expired, not swept
    assert await create_many(acme, ["y1", "y2"], 3) == ["y1", "y2"]
    await sweep_expired(acme._s, ["acme"])
    expired = [s for kind, s in await lifecycle(client, "acme") if kind == "session.expired"]
    assert sorted(expired) == short


async def test_recreated_id_keeps_the_earlier_expiry_event(client: Redis) -> None:
    acme = make_store(client).tenant("acme")
    await acme.create("r", model="m", ttl_seconds=1)
    await asyncio.sleep(1.3)
    await acme.create("r", model="m")
    await sweep_expired(acme._s, ["acme"])
    kinds = [kind for kind, s in await lifecycle(client, "acme") if s == "r"]
    assert kinds == ["session.created", "session.expired", "session.created"]
    assert await acme.count_live() == 1


async def modified(ts: TenantStore, sid: str) -> int:
    return int(await ts._s.redis.hget(ts._session_keys(sid).meta, "modified"))


async def late_touch(ts: TenantStore, sid: str, modified: int, deadline: int) -> None:
    """An index update of an earlier write landing now (what a slow network does)."""
    idx = ts._index_keys(sid)
    await ts._s.scripts["touch_index"](
        keys=[idx.idx, idx.exp, idx.gone],
        args=[sid, modified, deadline, "touch", TOMBSTONE_MS],
    )


async def test_late_index_updates_converge_on_a_cluster(redis_cluster_nodes: str) -> None:
    client = await cluster_client(redis_cluster_nodes)
    try:
        acme = make_store(client).tenant("acme")
        await acme.create("gone", model="m", max_sessions=1)
        written = await modified(acme, "gone")
        await acme.delete("gone")
        await late_touch(acme, "gone", written, -1)
        assert await acme.count_live() == 0
        assert len(await create_many(acme, ["next"], 1)) == 1

        # infinite -> finite, then the infinite write's update lands late
        await acme.create("inf", model="m", infinite=True)
        written = await modified(acme, "inf")
        await asyncio.sleep(0.01)
        await acme.update("inf", infinite=False, ttl_seconds=1)
        await late_touch(acme, "inf", written, -1)
        # and one whose expiry entry was lost altogether (a failed index update)
        await acme.create("lost", model="m", ttl_seconds=1)
        await client.zrem(acme._index_keys("lost").exp, "lost")
        await asyncio.sleep(1.3)
        report = await sweep_expired(acme._s, ["acme"])  # with its slice of the repair pass
        assert report.total == 2 and report.repaired == 1
        expired = [s for kind, s in await lifecycle(client, "acme") if kind == "session.expired"]
        assert sorted(expired) == ["inf", "lost"]
        assert await acme.count_live() == 1
        assert (await acme.repair_index()).removed == 0
    finally:
        await client.aclose()


async def test_reindex_moves_entries_to_their_shards(client: Redis) -> None:
    old = make_store(client, shards=1).tenant("acme")
    ids = [f"m{i}" for i in range(12)]
    for sid in ids:
        await old.create(sid, model="m", ttl_seconds=1 if sid == "m0" else None)
    acme = make_store(client, shards=4).tenant("acme")
    await acme.update("m1", name="written after the change")

    counts = await acme.reindex(1, dry_run=True)
    assert counts.moved > 0
    assert await client.zcard(K.index_keys(PREFIX, "acme", 0).idx) == 12
    seen: list[int] = []
    counts = await acme.reindex(1, progress=lambda c: seen.append(c.moved))
    assert seen and seen[-1] == counts.moved
    assert (await acme.reindex(1, dry_run=True)).moved == 0
    for shard in range(4):
        for sid in await client.zrange(K.index_keys(PREFIX, "acme", shard).idx, 0, -1):
            assert K.index_shard(sid, 4) == shard
    page = await acme.list_sessions(limit=100)
    assert sorted(s.session_id for s in page.data) == sorted(ids)
    assert await acme.count_live() == 12
    await asyncio.sleep(1.3)
    report = await sweep_expired(acme._s, ["acme"])
    assert report.total == 1 and (await sweep_expired(acme._s, ["acme"])).total == 0
    assert await acme.count_live() == 11


def test_reindex_command(cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """``sessionctl reindex``: a dry run changes nothing; the run reports progress on stderr and
    leaves every entry in its shard; bad usage exits 2."""
    import argparse

    from service.cli import reindex

    async def seed_one_shard() -> None:
        client = Redis.from_url(cli_env, decode_responses=True)
        ts = make_store(client, shards=1).tenant("acme")
        for i in range(20):
            await ts.create(f"s{i}", model="m")
        await client.aclose()

    async def shard0() -> int:
        client = Redis.from_url(cli_env, decode_responses=True)
        n = int(await client.zcard(K.index_keys(PREFIX, "acme", 0).idx))
        await client.aclose()
        return n

    def cli(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="sessionctl")
        reindex.register(parser.add_subparsers(dest="command", required=True))
        try:
            args = parser.parse_args(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0)
        code: int = args.func(args)
        return code

    asyncio.run(seed_one_shard())
    monkeypatch.setenv("SESSIONS_INDEX_SHARDS", "4")
    assert cli("reindex", "--tenant", "acme", "--from-shards", "1", "--dry-run") == 0
    out = capsys.readouterr()
    moved = int(out.out.split("would move ")[1].split()[0])
    assert moved > 0 and asyncio.run(shard0()) == 20
    assert cli("reindex", "--tenant", "acme", "--from-shards", "1") == 0
    out = capsys.readouterr()
    assert f"acme: moved {moved} index entries" in out.out
    assert "acme: move: 20 entries checked" in out.err and "acme: repair:" in out.err
    assert asyncio.run(shard0()) == 20 - moved
    assert cli("reindex", "--tenant", "acme") == 2  # --from-shards is required
