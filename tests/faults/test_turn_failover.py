"""Turns survive everyday faults, with default settings: a worker SIGKILLed mid-turn, a worker
SIGTERMed mid-turn during a rolling restart (drained, or handed over), and Redis stalling past
the client timeouts during streamed turns. Each prompt ends in exactly one reply or one error,
within a stated time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass

import pytest

from service import keys as K
from service.config import Settings
from service.errors import StoreUnavailable
from service.models import Event, NewEvent
from service.runtime import Runtime
from service.store import TenantStore
from tests.faults.conftest import PREFIX, TENANT, Processes, RedisServers, create_tenant
from tests.workers.conftest import wait_idle
from workers.queue import TurnQueue

FAILOVER_S = 15.0  # a SIGKILLed worker's turn continues elsewhere within this
HANDOVER_S = 3.0  # a turn cut by a worker's stop continues elsewhere within this
RECOVERY_S = 30.0  # every turn is answered this soon after Redis answers again
# 60 words streamed 100 ms apart: a turn of about 6 s, long enough to be killed in the middle
LONG_PROMPT = " ".join(f"word{i}" for i in range(60))
SLOW_STREAM = {"SESSIONS_DEV_STREAM_DELAY_MS": "100"}


@pytest.fixture
def settings(redis_servers: RedisServers) -> Settings:
    return Settings(redis_url=redis_servers.start(persistent=False).url, key_prefix=PREFIX)


async def send(store: TenantStore, queue: TurnQueue, session_id: str, prompt: str) -> str:
    res = await store.append(
        session_id, [NewEvent(type="user.message", data={"content": prompt})], enqueue_turn=True
    )
    await queue.enqueue_turn(store.tenant_id, session_id, res.event_ids[0])
    return res.event_ids[0]


async def holder_mid_turn(
    runtime: Runtime, store: TenantStore, session_id: str, workers: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """The worker streaming the session's turn, once it has streamed a few deltas."""
    meta = K.session_keys(PREFIX, TENANT, session_id).meta
    for _ in range(500):
        events = (await store.live_events(session_id))[-5:]  # deltas are live events
        lease = await runtime.redis.hget(meta, "lease")
        if lease and sum(e["type"] == "assistant.message_delta" for e in events) >= 3:
            pid = int(lease.split(":")[1])
            return next(w for w in workers if w.pid == pid)
        await asyncio.sleep(0.02)
    raise AssertionError("no worker streamed the turn")


@dataclass
class MidTurn:
    """Two workers, one of them (``victim``) streaming the long turn ``turn`` of a session."""

    store: TenantStore
    url: str
    workers: list[subprocess.Popen[bytes]]
    turn: str
    victim: subprocess.Popen[bytes]


async def mid_turn(
    procs: Processes, runtime: Runtime, queue: TurnQueue, session_id: str
) -> MidTurn:
    url = runtime.settings.redis_url
    assert url is not None
    await create_tenant(url)
    store = runtime.store.tenant(TENANT)
    await store.create(session_id, model="dev-echo", streaming=True)
    workers = [procs.worker(url, **SLOW_STREAM) for _ in range(2)]
    turn = await send(store, queue, session_id, LONG_PROMPT)
    victim = await holder_mid_turn(runtime, store, session_id, workers)
    return MidTurn(store, url, workers, turn, victim)


async def restarted_at(store: TenantStore, session_id: str, turn: str, timeout: float) -> float:
    """Loop time at which a second ``assistant.turn_start`` of ``turn`` appears."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        events = await store.live_events(session_id)  # turn markers are live events
        starts = [e for e in events if e["type"] == "assistant.turn_start"]
        if sum(e["data"]["turnId"] == turn for e in starts) >= 2:
            return loop.time()
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {turn} was not taken over within {timeout} s")


async def started(store: TenantStore, session_id: str, turn: str, timeout: float) -> None:
    """Until ``turn`` has started (its ``assistant.turn_start`` is live)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        events = await store.live_events(session_id)
        if any(e["type"] == "assistant.turn_start" and e["data"]["turnId"] == turn for e in events):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {turn} did not start within {timeout} s")


def one_reply_each(events: list[Event], prompts: list[str]) -> None:
    replies = [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"]
    assert replies == prompts, Counter(replies)
    assert not [e for e in events if e["type"] == "session.error"]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_sigkilled_workers_turn_continues_elsewhere_within_15_s(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    at = await mid_turn(procs, runtime, queue, "killed")
    store, turn, victim = at.store, at.turn, at.victim
    loop = asyncio.get_running_loop()
    procs.kill(victim)
    killed_at = loop.time()
    resumed_at = await restarted_at(store, "killed", turn, timeout=FAILOVER_S + 5)
    assert resumed_at - killed_at <= FAILOVER_S, (resumed_at - killed_at, procs.output())
    events = await wait_idle(store, "killed", timeout=30)
    one_reply_each(events, [turn])


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_sigtermed_worker_finishes_its_turn_and_leaves_the_next_to_another(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    """A rolling restart with the default drain: the old worker gets SIGTERM mid-turn. It
    answers that turn itself (the provider is not called for it again), a prompt sent during
    the drain is answered by the other worker, and the old one exits once its turn is done."""
    at = await mid_turn(procs, runtime, queue, "drained")
    store, workers, first, victim = at.store, at.workers, at.turn, at.victim
    victim.send_signal(signal.SIGTERM)
    second = await send(store, queue, "drained", LONG_PROMPT)
    await started(store, "drained", second, timeout=20)
    other = await holder_mid_turn(runtime, store, "drained", workers)
    assert other is not victim
    assert victim.wait(timeout=5) == 0, procs.output()  # it left as soon as its turn was done
    events = await wait_idle(store, "drained", timeout=30)
    one_reply_each(events, [first, second])
    starts = [e for e in await store.live_events("drained") if e["type"] == "assistant.turn_start"]
    assert [e["data"]["turnId"] for e in starts] == [first, second]  # none started over


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_second_sigterm_cuts_the_drain_short(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    """An operator who will not wait: a second SIGTERM during the drain hands the turn over at
    once, and the worker stops once."""
    at = await mid_turn(procs, runtime, queue, "impatient")
    store, turn, victim = at.store, at.turn, at.victim
    victim.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # draining
    victim.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    resumed_at = await restarted_at(store, "impatient", turn, timeout=HANDOVER_S + 10)
    assert resumed_at - stopped_at <= HANDOVER_S, (resumed_at - stopped_at, procs.output())
    assert victim.wait(timeout=10) is not None
    one_reply_each(await wait_idle(store, "impatient", timeout=30), [turn])
    (name,) = [n for n, p in procs.procs if p is victim]
    log = (procs.logs / f"{name}.log").read_text()
    assert log.count("worker.draining") == 1 and log.count("shutdown on SIGTERM") == 1, log


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("drain_s", [0, 1])
async def test_a_sigtermed_workers_turn_is_handed_over_after_the_drain_and_is_no_timeout(
    procs: Processes, runtime: Runtime, queue: TurnQueue, drain_s: int
) -> None:
    """A rolling restart: the replacement runs already, the old worker gets SIGTERM mid-turn;
    a turn still running when the drain ends (none with 0) starts over on another worker."""
    url = runtime.settings.redis_url
    assert url is not None
    await create_tenant(url)
    store = runtime.store.tenant(TENANT)
    await store.create("rolled", model="dev-echo", streaming=True)
    env = {**SLOW_STREAM, "SESSIONS_WORKER_DRAIN_SECONDS": str(drain_s)}
    workers = [procs.worker(url, **env) for _ in range(2)]
    turns = [await send(store, queue, "rolled", LONG_PROMPT)]
    loop = asyncio.get_running_loop()
    for _ in range(2):  # two restarts during one long conversation
        victim = await holder_mid_turn(runtime, store, "rolled", workers)
        victim.send_signal(signal.SIGTERM)
        stopped_at = loop.time()
        resumed_at = await restarted_at(store, "rolled", turns[-1], timeout=HANDOVER_S + 10)
        waited = resumed_at - stopped_at
        assert drain_s <= waited <= drain_s + HANDOVER_S, (waited, procs.output())
        assert victim.wait(timeout=10) is not None
        workers.append(procs.worker(url, **env))  # the next replacement
        events = await wait_idle(store, "rolled", timeout=30)
        one_reply_each(events, turns)
        turns.append(await send(store, queue, "rolled", LONG_PROMPT))
    events = await wait_idle(store, "rolled", timeout=30)
    one_reply_each(events, turns)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_redis_stalls_past_the_socket_timeout_lose_no_turn(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    """10 streaming sessions, 4 prompts each, 2 workers; Redis freezes three times for 7 s
    (``DEBUG SLEEP``, past the 5 s socket timeout: a failover or fork pause). Every accepted
    prompt is answered exactly once, soon after the last stall."""
    url = runtime.settings.redis_url
    assert url is not None
    await create_tenant(url)
    store = runtime.store.tenant(TENANT)
    sessions = [f"stall-{i}" for i in range(10)]
    for sid in sessions:
        await store.create(sid, model="dev-echo", streaming=True)
    for _ in range(2):
        procs.worker(url, SESSIONS_DEV_STREAM_DELAY_MS="50")
    accepted: dict[str, list[str]] = {sid: [] for sid in sessions}

    async def client(sid: str) -> None:
        """Sends its prompts back to back, each retried with its Idempotency-Key until
        accepted, as the clients do with a 503; the turns then stream while Redis stalls."""
        for n in range(4):
            prompt = f"{sid} prompt {n} " + " ".join(f"w{i}" for i in range(20))
            while True:
                try:
                    res = await store.append(
                        sid,
                        [NewEvent(type="user.message", data={"content": prompt})],
                        idempotency_key=f"{sid}-{n}",
                        enqueue_turn=True,
                    )
                    await queue.enqueue_turn(TENANT, sid, res.event_ids[0])
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.5)
            accepted[sid].append(res.event_ids[0])

    async def stalls() -> None:
        from redis.asyncio import Redis

        admin = Redis.from_url(url)  # no socket timeout: it waits the sleep out
        try:
            await asyncio.sleep(0.5)  # the turns are streaming
            for _ in range(3):
                await admin.execute_command("DEBUG", "SLEEP", 7)
                await asyncio.sleep(1.0)
        finally:
            await admin.aclose()

    loop = asyncio.get_running_loop()
    await asyncio.gather(stalls(), *(client(sid) for sid in sessions))
    thawed_at = loop.time()
    for sid in sessions:
        remaining = RECOVERY_S - (loop.time() - thawed_at)
        events = await wait_idle(store, sid, timeout=max(remaining, 1))
        one_reply_each(events, accepted[sid])
    assert loop.time() - thawed_at <= RECOVERY_S
