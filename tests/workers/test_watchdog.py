"""The watchdog and the turn lease, with the real arq worker in this process and real Redis
(single server and the 3-node Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode
from structlog.testing import capture_logs

from service.models import NewEvent
from service.runtime import Runtime
from service.store import Store
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers.lease import LEASE_S, LeaseLost, SessionLease
from workers.queue import TurnQueue
from workers.watchdog import BATCH, watch


async def strand(runtime: Runtime, session_id: str, prompt: str = "hello") -> str:
    """A turn appended with no job enqueued for it: what a lost job or queue write leaves."""
    store = runtime.store.tenant("acme")
    res = await store.append(
        session_id, [NewEvent(type="user.message", data={"content": prompt})], enqueue_turn=True
    )
    return res.event_ids[0]


async def test_a_stranded_turn_is_rescued_and_answered_once(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("lost", model="dev-echo")
    turn = await strand(runtime, "lost")
    assert await runtime.store.pending("acme").size() == 1
    await start_worker()
    await asyncio.sleep(0.2)
    assert await store.pending_turns("lost") == [turn]  # no job: nobody answers it
    report = await watch(runtime, queue, ["acme"], stranded_after_s=0)
    assert (report.rescued, report.looked_at) == (1, 1)
    events = await wait_idle(store, "lost")
    assert [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"] == [turn]
    # answered: the session leaves the registry (in the reply's script on a single Redis, by the
    # next pass on a Cluster) and nothing is rescued again
    report = await watch(runtime, queue, ["acme"], stranded_after_s=0)
    assert report.rescued == 0
    assert report.settled == (1 if runtime.store.cluster else 0)
    assert await runtime.store.pending("acme").size() == 0


async def test_the_watchdog_leaves_recent_and_leased_sessions_alone(
    runtime: Runtime, queue: TurnQueue
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("fresh", model="dev-echo")
    await store.create("held", model="dev-echo")
    await strand(runtime, "fresh")
    await strand(runtime, "held")
    assert (await watch(runtime, queue, ["acme"])).looked_at == 0  # registered just now
    lease = SessionLease(store, "held")
    async with lease.hold() as held:
        assert held
        report = await watch(runtime, queue, ["acme"], stranded_after_s=0)
        assert (report.looked_at, report.rescued) == (2, 1)  # "fresh" only
        # a rescue moves the entry's time: no second rescue right away
        assert (await watch(runtime, queue, ["acme"], stranded_after_s=1)).looked_at == 0
    assert (await store.turn_state("held")).lease_live is False  # released on the way out


async def test_deleted_sessions_leave_the_registry(runtime: Runtime, queue: TurnQueue) -> None:
    store = runtime.store.tenant("acme")
    await store.create("gone", model="dev-echo")
    await strand(runtime, "gone")
    await store.delete("gone")
    report = await watch(runtime, queue, ["acme"], stranded_after_s=0)
    assert report.rescued == 0
    assert await runtime.store.pending("acme").size() == 0


async def test_the_watchdog_cron_answers_a_stranded_turn_by_itself(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    """Nothing but the worker's own cron: answered within the stranded age plus two ticks."""
    store = runtime.store.tenant("acme")
    await runtime.tenants.create("acme")
    await store.create("cron", model="dev-echo")
    turn = await strand(runtime, "cron")
    await start_worker()
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await wait_idle(store, "cron", timeout=LEASE_S + 3 * 2 + 5)
    assert [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"] == [turn]
    assert loop.time() - started <= LEASE_S + 2 * 2 + 3


async def test_a_lease_taken_over_stops_the_holder_and_refuses_its_writes(
    runtime: Runtime,
) -> None:
    """Another worker took the lease over (it had expired during a stall): the holder's work is
    cancelled with ``LeaseLost``, its turn writes are refused, and leaving ``hold()`` is clean."""
    store = runtime.store.tenant("acme")
    await store.create("taken", model="dev-echo")
    turn = await strand(runtime, "taken")
    lease = SessionLease(store, "taken", lease_s=0.6)
    meta = runtime.store.tenant("acme")._session_keys("taken").meta
    with pytest.raises(LeaseLost):
        async with lease.hold() as held:
            assert held
            async with lease.fenced():
                assert await store.guarded_append("taken", turn, [delta("a")], lease=lease.token)
                await runtime.redis.hset(meta, "lease", "other:1:x|99999999999999")
                await asyncio.sleep(5)  # the provider call the keeper must cut short
    assert lease.lost
    refused = await store.complete_turn("taken", turn, [delta("b")], lease=lease.token)
    assert refused is None
    assert await runtime.redis.hget(meta, "lease") == "other:1:x|99999999999999"  # not released
    assert await store.pending_turns("taken") == [turn]


async def test_a_failed_renewal_is_retried_and_the_lease_kept(runtime: Runtime) -> None:
    """Redis stalls past the client's socket timeout mid-turn: renewals fail, are tried again,
    and the lease is still this holder's afterwards (nobody took it over), so the turn goes on."""
    if runtime.store.cluster:
        pytest.skip(
            "the cluster client retries a timed-out command itself (after re-reading the slots), "
            "so a stall makes a renewal slow rather than failed; the keeper is the same code"
        )
    store = (await short_timeout_store(runtime)).tenant("acme")
    await store.create("kept", model="dev-echo")
    turn = await strand(runtime, "kept")
    lease = SessionLease(store, "kept", lease_s=2.4)
    meta = runtime.store.tenant("acme")._session_keys("kept").meta

    async def expiry() -> int:
        return int((await runtime.redis.hget(meta, "lease")).rsplit("|", 1)[1])

    with capture_logs() as logs:
        async with lease.hold() as held:
            assert held
            async with lease.fenced():
                await asyncio.sleep(0.1)
                await stall(runtime, "kept", seconds=2.0)
                await asyncio.sleep(2.5)  # renewals resume once Redis answers again
                after_stall = await expiry()
                await asyncio.sleep(1.0)
                assert await expiry() > after_stall  # the keeper lived through the failures
                assert (await store.turn_state("kept")).lease_live
            assert not lease.lost
            done = await store.complete_turn("kept", turn, [delta("ok")], lease=lease.token)
            assert done is not None
    failures = [e for e in logs if e["event"] == "lease.renew_failed"]
    assert failures, logs  # the stall did fail renewals
    assert not (await store.turn_state("kept")).lease_live  # released


async def short_timeout_store(runtime: Runtime) -> Store:
    """A store on the same Redis whose client gives up on a reply after 0.3 s."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    settings = runtime.settings
    client: Any
    if isinstance(runtime.redis, RedisCluster):
        nodes = [ClusterNode(h, p) for h, p in settings.cluster_startup_nodes()]
        client = RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=0.3)
    else:
        assert settings.redis_url is not None
        client = Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=0.3)
    clients.append(client)
    return Store(client, prefix=settings.key_prefix, index_shards=settings.index_shards)


clients: list[Any] = []


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while clients:
        await clients.pop().aclose()


async def stall(runtime: Runtime, session_id: str, seconds: float) -> None:
    """``DEBUG SLEEP`` on the server that holds ``session_id``, from a client of its own; returns
    at once, while Redis sleeps."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    if isinstance(runtime.redis, RedisCluster):
        meta = runtime.store.tenant("acme")._session_keys(session_id).meta
        node = runtime.redis.get_node_from_key(meta)
        admin = Redis(host=node.host, port=node.port)
    else:
        assert runtime.settings.redis_url is not None
        admin = Redis.from_url(runtime.settings.redis_url)
    clients.append(admin)
    sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", seconds))
    background.add(sleeper)
    sleeper.add_done_callback(background.discard)
    await asyncio.sleep(0.05)  # the command is on its way before the caller goes on


background: set[asyncio.Task[Any]] = set()


def delta(text: str) -> NewEvent:
    return NewEvent(type="assistant.message_delta", data={"deltaContent": text})


async def test_sessions_being_answered_do_not_hide_a_stranded_one(
    runtime: Runtime, queue: TurnQueue
) -> None:
    """More than one batch of registered sessions whose turns are being answered (live leases,
    e.g. slow provider calls) sit at the head of the registry: a stranded session registered
    after them must still be rescued within a few passes, not wait behind them for ever."""
    store = runtime.store.tenant("acme")
    for i in range(BATCH):
        sid = f"busy{i}"
        await store.create(sid, model="dev-echo")
        await strand(runtime, sid)
        assert await store.lease(sid, "take", f"elsewhere:{i}", 60_000) == 1
    await asyncio.sleep(0.01)  # registered strictly after every busy one
    await store.create("stranded", model="dev-echo")
    turn = await strand(runtime, "stranded")
    rescued = passes = 0
    while not rescued and passes < 3:
        rescued = (await watch(runtime, queue, ["acme"], stranded_after_s=0)).rescued
        passes += 1
    assert rescued == 1
    assert (await store.turn_state("stranded")).oldest == turn
    # the busy ones come back to be looked at once their leases could have expired
    registry = runtime.store.pending("acme")
    now = await runtime.store.server_time_ms()
    assert len(await registry.older_than(now + 60_000, BATCH + 1)) == BATCH + 1


async def test_a_session_deleted_mid_turn_and_created_again_gets_nothing_of_the_old_turn(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("again", model="dev-echo", streaming=True)
    await start_worker(runtime.settings.model_copy(update={"dev_stream_delay_ms": 50}))
    old = await send(store, queue, "again", " ".join(f"w{i}" for i in range(40)))
    await asyncio.sleep(0.5)  # the old turn streams for about 2 s
    await store.delete("again")
    await store.create("again", model="dev-echo", streaming=True)
    turn = await send(store, queue, "again", "fresh")
    events = await wait_idle(store, "again")
    assert [e["id"] for e in events if e["type"] == "user.message"] == [turn]
    assert [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"] == [turn]
    assert not [e for e in events if old in (e["data"].get("reply_to"), e["data"].get("turnId"))]
