"""Cleanup's one implementation, in-process on a real Redis: selection, export-then-delete,
sessions written meanwhile, dry run, interruption, retention rules."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from service.cleanup import Cleanup, Options, Outcome, apply_retention, run_cleanup, select_matching
from service.export import ExportWriter, read_export
from service.retention import Filter
from service.store import Store
from service.tenants import Retention, Tenant
from tests.cleanup.conftest import lifecycle, listing, seed, tenant_keys, user

HOUR_MS = 3_600_000


async def now_ms(redis: Redis) -> int:
    sec, usec = await redis.time()
    return int(sec) * 1000 + int(usec) // 1000


@pytest.mark.parametrize("gzip", [False, True], ids=["jsonl", "gzip"])
async def test_export_reproduces_every_event_of_every_deleted_session(
    store: Store, real_redis: Redis, tmp_path: Path, gzip: bool
) -> None:
    before = {}
    for tenant in ("acme", "globex"):
        ts = store.tenant(tenant)
        ids = await seed(ts, 12, events=7, labels={"env": "staging"})
        await seed(ts, 3, prefix="prod", labels={"env": "prod"})
        await seed(ts, 2, prefix="inf", infinite=True, labels={"env": "staging"})
        for sid in ids:
            before[(tenant, sid)] = (await ts.get(sid), await ts.read_events(sid))

    report = await run_cleanup(
        store,
        ["acme", "globex"],
        Filter(labels={"env": "staging"}),
        options=Options(export_dir=tmp_path, gzip=gzip),
    )
    assert report.counts()["deleted"] == 24 and report.counts()["exported"] == 24
    assert not report.failed and not report.interrupted
    suffix = ".jsonl.gz" if gzip else ".jsonl"
    assert listing(tmp_path) == sorted(f"{t}/{sid}{suffix}" for t, sid in before)
    for (tenant, sid), (info, events) in before.items():
        session, exported = read_export(tmp_path / tenant / f"{sid}{suffix}")
        assert exported == events and len(events) == 7  # the history: 7 messages
        assert session == info.model_dump(mode="json")
        assert not await store.tenant(tenant).exists(sid)
    for tenant in ("acme", "globex"):
        deleted = [
            s for kind, s in await lifecycle(real_redis, tenant) if kind == "session.deleted"
        ]
        assert sorted(deleted) == sorted(s for t, s in before if t == tenant)
        assert await store.tenant(tenant).count_live() == 5  # prod and infinite sessions kept


async def test_a_session_written_after_selection_is_not_deleted(
    store: Store, real_redis: Redis, tmp_path: Path
) -> None:
    acme = store.tenant("acme")
    await seed(acme, 6, events=1)
    await acme.append("s001", [user("pending")], enqueue_turn=True)  # a turn is pending
    now = await now_ms(real_redis)
    candidates = await select_matching(acme, Filter(everything=True), now)
    assert len(candidates) == 6
    await acme.append("s000", [user("written after selection")])
    await acme.delete("s002")  # deleted by someone else meanwhile

    report = await Cleanup(store, Options(export_dir=tmp_path)).process(candidates)
    outcome = {r.session_id: r.outcome for r in report.results}
    assert outcome == {
        "s000": Outcome.SKIPPED_CHANGED,
        "s001": Outcome.SKIPPED_CHANGED,
        "s002": Outcome.SKIPPED_GONE,
        "s003": Outcome.DELETED,
        "s004": Outcome.DELETED,
        "s005": Outcome.DELETED,
    }
    assert await acme.exists("s000") and await acme.exists("s001")
    assert listing(tmp_path) == ["acme/s003.jsonl", "acme/s004.jsonl", "acme/s005.jsonl"]


async def test_a_session_written_during_its_export_is_kept_and_its_export_removed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = store.tenant("acme")
    await seed(acme, 3, events=2)
    original = ExportWriter.write
    loop = asyncio.get_running_loop()

    def write_then_touch(self: ExportWriter, lines: list[str]) -> None:
        original(self, lines)
        if self.path.name.startswith("s001"):
            asyncio.run_coroutine_threadsafe(acme.append("s001", [user("late")]), loop).result()

    monkeypatch.setattr(ExportWriter, "write", write_then_touch)
    report = await run_cleanup(
        store, ["acme"], Filter(everything=True), options=Options(export_dir=tmp_path)
    )
    assert {r.session_id: r.outcome for r in report.results}["s001"] is Outcome.SKIPPED_CHANGED
    assert await acme.exists("s001")
    assert listing(tmp_path) == ["acme/s000.jsonl", "acme/s002.jsonl"]


async def test_sessions_written_after_the_run_started_are_not_selected(
    store: Store, real_redis: Redis
) -> None:
    acme = store.tenant("acme")
    await seed(acme, 3, events=0, concurrency=1)
    start = await now_ms(real_redis)
    await asyncio.sleep(0.01)
    await seed(acme, 2, prefix="late", events=0)
    selected = await select_matching(acme, Filter(everything=True), start)
    assert [c.session_id for c in selected] == ["s000", "s001", "s002"]


async def test_dry_run_changes_nothing(store: Store, real_redis: Redis, tmp_path: Path) -> None:
    acme = store.tenant("acme")
    await seed(acme, 5)
    keys = await tenant_keys(real_redis, "acme")
    stream = await lifecycle(real_redis, "acme")
    report = await run_cleanup(
        store,
        ["acme"],
        Filter(everything=True),
        options=Options(dry_run=True, export_dir=tmp_path),
    )
    assert report.counts()["would-delete"] == 5 and report.counts()["deleted"] == 0
    assert await tenant_keys(real_redis, "acme") == keys
    assert await lifecycle(real_redis, "acme") == stream
    assert listing(tmp_path) == []


async def test_filters_limit_and_infinite(store: Store, real_redis: Redis) -> None:
    acme = store.tenant("acme")
    await seed(acme, 4, prefix="a", labels={"team": "a"}, concurrency=1)  # oldest first
    await seed(acme, 4, prefix="b", labels={"team": "b"})
    await seed(acme, 2, prefix="ia", labels={"team": "a"}, infinite=True)
    later = await now_ms(real_redis) + 2 * HOUR_MS
    # Nothing is an hour idle yet; two hours from now, all are.
    assert not await select_matching(acme, Filter(idle_for=3600), later - 2 * HOUR_MS)
    team_a = await select_matching(acme, Filter(idle_for=3600, labels={"team": "a"}), later)
    assert [c.session_id for c in team_a] == [f"a{i:03d}" for i in range(4)]
    report = await run_cleanup(store, ["acme"], Filter(labels={"team": "a"}), limit=3)
    assert [r.session_id for r in report.results] == ["a000", "a001", "a002"]
    report = await run_cleanup(store, ["acme"], Filter(labels={"team": "a"}, include_infinite=True))
    assert sorted(r.session_id for r in report.results) == ["a003", "ia000", "ia001"]
    assert await acme.count_live() == 4


async def test_interrupted_run_then_rerun_reaches_the_same_state(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = store.tenant("acme")
    await seed(acme, 20, events=4, labels={"old": "1"})
    await seed(acme, 5, prefix="keep")
    stop = asyncio.Event()
    original = ExportWriter.write
    writes = 0

    def write_and_stop(self: ExportWriter, lines: list[str]) -> None:
        nonlocal writes
        writes += 1
        original(self, lines)
        if writes == 15:  # mid-export of a session: header written, events not yet
            stop.set()

    monkeypatch.setattr(ExportWriter, "write", write_and_stop)
    report = await run_cleanup(
        store,
        ["acme"],
        Filter(labels={"old": "1"}),
        options=Options(export_dir=tmp_path),
        stop=stop,
    )
    assert report.interrupted and report.counts()["deleted"] == 7
    # seven complete exports (no partial file), each of a session that is gone; which seven
    # depends on the modification order of the seeding, which can tie within a millisecond
    exported = listing(tmp_path)
    assert len(exported) == 7 and all(re.fullmatch(r"acme/s\d{3}\.jsonl", f) for f in exported)
    for name in exported:
        assert not await acme.exists(name.removeprefix("acme/").removesuffix(".jsonl"))
    assert await acme.count_live() == 18
    monkeypatch.setattr(ExportWriter, "write", original)

    again = await run_cleanup(
        store, ["acme"], Filter(labels={"old": "1"}), options=Options(export_dir=tmp_path)
    )
    assert again.counts()["deleted"] == 13 and not again.interrupted
    assert listing(tmp_path) == [f"acme/s{i:03d}.jsonl" for i in range(20)]
    assert await acme.count_live() == 5


async def test_retention_max_sessions_evicts_least_recently_modified_finite_first(
    store: Store, real_redis: Redis
) -> None:
    acme = store.tenant("acme")
    await seed(acme, 2, prefix="inf", events=0, infinite=True)  # the oldest: never evicted
    for i in range(8):
        await seed(acme, 1, prefix=f"f{i}-", events=0)
        await asyncio.sleep(0.002)
    await acme.append("f0-000", [user("touched: now the most recent")])
    tenant = Tenant(id="acme", name="acme", created_at_ms=0, retention=Retention(max_sessions=5))
    report = await apply_retention(store, tenant)
    assert [r.session_id for r in report.results] == ["f1-000", "f2-000", "f3-000"]
    assert await acme.count_finite_live() == 5 and await acme.count_live() == 7
    deleted = [s for kind, s in await lifecycle(real_redis, "acme") if kind == "session.deleted"]
    assert deleted == ["f1-000", "f2-000", "f3-000"]
    assert (await apply_retention(store, tenant)).results == []


async def test_retention_max_age_and_idle(store: Store, real_redis: Redis) -> None:
    acme = store.tenant("acme")
    await seed(acme, 3, prefix="old", events=0)
    await seed(acme, 2, prefix="inf", events=0, infinite=True)
    base = await now_ms(real_redis)
    age = Tenant(id="acme", name="a", created_at_ms=0, retention=Retention(max_age_seconds=3600))
    assert (await apply_retention(store, age, now_ms=base + 10_000)).results == []
    report = await apply_retention(store, age, now_ms=base + 2 * HOUR_MS)
    assert sorted(r.session_id for r in report.results) == ["old000", "old001", "old002"]
    await seed(acme, 2, prefix="idle", events=0)
    idle = Tenant(id="acme", name="a", created_at_ms=0, retention=Retention(max_idle_seconds=60))
    report = await apply_retention(store, idle, now_ms=await now_ms(real_redis) + 61_000)
    assert sorted(r.session_id for r in report.results) == ["idle000", "idle001"]
    assert sorted(c.session_id for c in await select_matching(
        acme, Filter(everything=True, include_infinite=True), await now_ms(real_redis)
    )) == ["inf000", "inf001"]  # fmt: skip
