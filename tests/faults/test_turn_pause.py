"""A worker paused (SIGSTOP: a VM freeze, a long GC or swap storm) mid-turn for longer than its
lease, then resumed after another worker took its turn over: the paused worker writes nothing more,
so the turn ends in one reply whose deltas after the takeover are the new holder's alone."""

from __future__ import annotations

import asyncio
import signal

import pytest

from service.config import Settings
from service.runtime import Runtime
from tests.faults.conftest import PREFIX, Processes, RedisServers
from tests.faults.test_turn_failover import (
    FAILOVER_S,
    mid_turn,
    one_reply_each,
    restarted_at,
    send,
)
from tests.workers.conftest import wait_idle
from workers.queue import TurnQueue


@pytest.fixture
def settings(redis_servers: RedisServers) -> Settings:
    return Settings(redis_url=redis_servers.start(persistent=False).url, key_prefix=PREFIX)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_worker_paused_past_its_lease_writes_nothing_after_the_takeover(
    procs: Processes, runtime: Runtime, queue: TurnQueue
) -> None:
    at = await mid_turn(procs, runtime, queue, "paused")
    store, turn, victim = at.store, at.turn, at.victim
    victim.send_signal(signal.SIGSTOP)
    try:
        await restarted_at(store, "paused", turn, timeout=FAILOVER_S + 5)
        await asyncio.sleep(0.5)  # the new holder streams a little before the old one wakes
    finally:
        victim.send_signal(signal.SIGCONT)
    events = await wait_idle(store, "paused", timeout=40)
    one_reply_each(events, [turn])
    starts = [i for i, e in enumerate(events) if e["type"] == "assistant.turn_start"]
    assert len(starts) == 2, procs.output()
    after = events[starts[-1] :]
    deltas = "".join(
        e["data"]["deltaContent"] for e in after if e["type"] == "assistant.message_delta"
    )
    reply = next(e for e in after if e["type"] == "assistant.message")
    assert deltas == reply["data"]["content"], procs.output()
    assert victim.poll() is None  # the paused worker lives on and serves other turns
    more = await send(store, queue, "paused", "again")
    events = await wait_idle(store, "paused", timeout=30)
    one_reply_each(events, [turn, more])
