"""Workers killed (SIGKILL) mid-turn, again and again, while prompts keep coming: every prompt
still gets exactly one reply, in order. A dead worker's turn is taken over once its lease expires,
by the next job of its session or by the watchdog; turns longer than their deadline end in one
timeout error."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections import Counter

import pytest

from service import keys as K
from service.config import Settings
from service.models import Event
from service.runtime import Runtime
from service.store import TenantStore
from tests.faults.conftest import PREFIX, TENANT, Processes, RedisServers
from tests.workers.conftest import send, wait_idle
from workers.queue import TurnQueue

SESSIONS = 6
PROMPTS = 30
WORKERS = 3
KILLS = 4
WORKER_ENV = {"SESSIONS_JOB_TIMEOUT_SECONDS": "4", "SESSIONS_DEV_STREAM_DELAY_MS": "20"}


@pytest.fixture
def settings(redis_servers: RedisServers) -> Settings:
    """A Redis of this test's own (the root fixtures build the runtime and queue from it)."""
    return Settings(redis_url=redis_servers.start(persistent=False).url, key_prefix=PREFIX)


async def all_answered(store: TenantStore, sessions: list[str]) -> bool:
    for sid in sessions:
        if await store.pending_turns(sid):
            return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_workers_killed_mid_turn_under_load_answer_every_prompt_once(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    url = runtime.settings.redis_url
    assert url is not None
    store = runtime.store.tenant(TENANT)
    sessions = [f"load-{i}" for i in range(SESSIONS)]
    for sid in sessions:
        await store.create(sid, model="dev-echo", streaming=True)
    workers: list[subprocess.Popen[bytes]] = [
        procs.worker(url, **WORKER_ENV) for _ in range(WORKERS)
    ]
    rng = random.Random()
    sent: dict[str, list[str]] = {sid: [] for sid in sessions}

    async def producer() -> None:
        for i in range(PROMPTS):
            sid = sessions[i % SESSIONS]
            # Short prompts keep every reply (which quotes the session's earlier prompts) near
            # 0.5 s, so even a backlog held up by a dead worker's lease drains well within the
            # job timeout (see test_a_backlog_longer_than_the_job_timeout_is_still_answered).
            prompt = f"prompt {i}"
            sent[sid].append(await send(store, queue, sid, prompt))
            await asyncio.sleep(0.25)  # prompts keep coming for as long as the kills go on

    async def mid_turn() -> dict[str, str]:
        """Sessions streaming a reply: session id -> the id of its newest delta. The live window
        holds the deltas; prompts that keep arriving are passed over, so they hide no stream."""
        found = {}
        for sid in sessions:
            live = await store.live_events(sid)
            last = [e for e in live if e["type"] != "user.message"][-1:]
            if last and last[0]["type"] == "assistant.message_delta":
                found[sid] = last[0]["id"]
        return found

    def holder(lease: str | None) -> subprocess.Popen[bytes] | None:
        """The live worker whose pid a session lease names (``host:pid:token|expiry``)."""
        pid = int(lease.split(":")[1]) if lease else None
        return next((w for w in workers if w.pid == pid and w.poll() is None), None)

    producing = asyncio.create_task(producer())
    kills = landed = 0
    kill_log: list[tuple[int, dict[str, str], dict[str, str], dict[str, str]]] = []
    try:
        # A few kills of the worker streaming a turn, found through the session's lease; a kill
        # "lands" when it froze that turn mid-stream (the dead worker's lease keeps its session
        # still for seconds, where a live one streams every 20 ms). Should none land (a turn can
        # end just before its worker is killed), a few more are made, so the test never proves
        # nothing.
        while kills < KILLS or (not landed and kills < KILLS + 4):
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            victim = None
            for _ in range(50):
                streaming = await mid_turn()
                for sid in streaming:
                    meta = K.session_keys(PREFIX, TENANT, sid).meta
                    victim = holder(await runtime.redis.hget(meta, "lease"))
                    if victim is not None:
                        streaming = {sid: streaming[sid]}
                        break
                if victim is not None:
                    break
                await asyncio.sleep(0.02)
            victim = victim or rng.choice([w for w in workers if w.poll() is None])
            procs.kill(victim)
            kills += 1
            # The stream as the kill left it (it moved on while the victim was looked for), and
            # again later: a turn the kill cut off has not moved in between.
            cut = {sid: eid for sid, eid in (await mid_turn()).items() if sid in streaming}
            await asyncio.sleep(0.5)
            now = await mid_turn()
            landed += any(now.get(sid) == eid for sid, eid in cut.items())
            kill_log.append((victim.pid, streaming, cut, now))
            workers.append(procs.worker(url, **WORKER_ENV))
        await asyncio.wait_for(producing, 30)
    finally:
        producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await all_answered(store, sessions):
        # a job cut off by arq's backstop would strand its turn: say so rather than wait
        assert "run_turn failed, TimeoutError" not in procs.output(), procs.output()
        assert loop.time() < deadline, f"turns still pending\n{procs.output()}"
        await asyncio.sleep(0.1)

    interrupted = 0
    for sid in sessions:
        events: list[Event] = [e async for e in store.iter_events(sid)]
        live = await store.live_events(sid)  # what subscribers saw, transient events too
        assert [e for e in live if e["type"] in ("user.message", "assistant.message")] == [
            e for e in events if e["type"] in ("user.message", "assistant.message")
        ]
        prompts = [e["id"] for e in events if e["type"] == "user.message"]
        assert prompts == sent[sid]
        replies = [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"]
        # exactly one reply per prompt, in the order of the prompts
        assert replies == prompts, f"{sid}: {Counter(replies)}\n{procs.output()}"
        assert not [e for e in events if e["type"] == "session.error"]
        starts = Counter(e["data"]["turnId"] for e in live if e["type"] == "assistant.turn_start")
        interrupted += sum(n - 1 for n in starts.values())
        info = await store.get(sid)
        assert info.event_count == len(events)
    # The kills did land mid-turn: some turns were started more than once.
    assert landed >= 1 and interrupted >= 1, (landed, interrupted, kill_log)


@pytest.mark.slow
async def test_a_backlog_longer_than_the_job_timeout_is_still_answered(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    url = runtime.settings.redis_url
    assert url is not None
    store = runtime.store.tenant(TENANT)
    await store.create("backlog", model="dev-echo", streaming=True)
    # each streamed reply takes well under the 2 s job timeout; six of them outlast it
    procs.worker(url, SESSIONS_JOB_TIMEOUT_SECONDS="2", SESSIONS_DEV_STREAM_DELAY_MS="40")
    prompts = [await send(store, queue, "backlog", f"prompt {i}") for i in range(6)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        if not await store.pending_turns("backlog"):
            break
        await asyncio.sleep(0.1)
    events = [e async for e in store.iter_events("backlog")]
    replies = [e["data"]["reply_to"] for e in events if e["type"] == "assistant.message"]
    assert replies == prompts


@pytest.mark.slow
async def test_a_turn_longer_than_the_job_timeout_fails_instead_of_hanging(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    """A turn that no job can finish within its timeout is handed to a new job a few times,
    then ends with a timeout error; the session's next turn is answered normally."""
    url = runtime.settings.redis_url
    assert url is not None
    store = runtime.store.tenant(TENANT)
    await store.create("slow", model="dev-echo", streaming=True)
    procs.worker(url, SESSIONS_JOB_TIMEOUT_SECONDS="1", SESSIONS_DEV_STREAM_DELAY_MS="60")
    long_prompt = await send(store, queue, "slow", "please repeat this long question " * 6)
    events = await wait_idle(store, "slow", timeout=30)
    errors = [e["data"] for e in events if e["type"] == "session.error"]
    assert [(e["errorType"], e["reply_to"]) for e in errors] == [("timeout", long_prompt)]
    # the session goes on: a turn that fits (no streaming delay) is answered
    await store.update("slow", extra={"streaming": 0})
    short = await send(store, queue, "slow", "hi")
    events = await wait_idle(store, "slow", timeout=30)
    replies = [e for e in events if e["type"] == "assistant.message"]
    assert [r["data"]["reply_to"] for r in replies] == [short]
