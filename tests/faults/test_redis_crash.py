"""Redis killed (SIGKILL) while clients send, restarted from its append-only file
(``appendfsync always``): the API answers 503 while it is down, recovers by itself, and every
acknowledged message is stored exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from service import keys as K
from tests.faults.conftest import (
    PREFIX,
    PROBLEM_JSON,
    TENANT,
    Processes,
    RedisServers,
    all_events,
    auth,
    create_tenant,
    redis_client,
    until,
    wait_ready,
)

SESSION = "crash-redis"
SENDERS = 8
PER_PHASE = 40  # acknowledged sends before the kill, and again after the restart
RETRY_PAUSE_S = 0.05


@dataclass
class Ledger:
    """What the clients saw: the acknowledged sends and every answer."""

    acked: dict[str, str] = field(default_factory=dict)  # content -> message id
    keys: dict[str, str] = field(default_factory=dict)  # content -> Idempotency-Key
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)


async def sender(n: int, url: str, key: str, ledger: Ledger, stop: asyncio.Event) -> None:
    """Sends numbered messages until ``stop``; each is retried with its own Idempotency-Key
    until it is acknowledged (202), as a careful client does."""
    path = f"/v1/sessions/{SESSION}/messages"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    async with httpx.AsyncClient(base_url=url, headers=auth(key), timeout=15) as http:
        i = 0
        while not stop.is_set():
            content = f"sender {n} message {i}"
            ledger.keys[content] = idem = f"key-{n}-{i}"
            while loop.time() < deadline:
                try:
                    resp = await http.post(
                        path, json={"prompt": content}, headers={"Idempotency-Key": idem}
                    )
                except httpx.TransportError as exc:
                    ledger.unexpected.append(f"{content}: {exc!r}")
                else:
                    ledger.statuses[resp.status_code] += 1
                    if resp.status_code == 202:
                        ledger.acked[content] = resp.json()["message_id"]
                        break
                    problem = resp.headers.get("content-type", "").startswith(PROBLEM_JSON)
                    if resp.status_code != 503 or not problem:
                        ledger.unexpected.append(f"{content}: {resp.status_code} {resp.text}")
                await asyncio.sleep(RETRY_PAUSE_S)
            i += 1


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_redis_killed_mid_traffic_loses_no_acknowledged_message(
    procs: Processes, redis_servers: RedisServers
) -> None:
    redis = redis_servers.start(fsync="always")
    key = await create_tenant(redis.url)
    # no worker answers here, so every send stays waiting in the one session
    api = procs.api(redis.url, SESSIONS_MAX_PENDING_TURNS="100000")
    await wait_ready(api, procs)
    ledger = Ledger()
    stop = asyncio.Event()

    async with httpx.AsyncClient(base_url=api.url, headers=auth(key), timeout=15) as http:
        resp = await http.post("/v1/sessions", json={"session_id": SESSION})
        assert resp.status_code == 201, resp.text
        tasks = [asyncio.create_task(sender(n, api.url, key, ledger, stop)) for n in range(SENDERS)]
        try:
            await until(lambda: len(ledger.acked) >= PER_PHASE, "first sends", procs, 30)
            redis.kill()
            await until(lambda: ledger.statuses[503] >= SENDERS, "503 while down", procs, 15)
            await asyncio.sleep(0.5)  # clients keep sending into the outage
            redis.start()  # same port, same data dir: it loads the append-only file
            resumed = len(ledger.acked)
            await until(
                lambda: len(ledger.acked) >= resumed + PER_PHASE, "sends after restart", procs, 30
            )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        # The API recovered on its own: the same process served before, during and after.
        assert api.proc.poll() is None, procs.output()
        assert ledger.unexpected == [], "\n".join(ledger.unexpected[:20])
        assert ledger.statuses[503] >= 1 and set(ledger.statuses) <= {202, 503}, ledger.statuses
        # Every send was eventually acknowledged (the clients retried until it was).
        assert set(ledger.acked) == set(ledger.keys)

        # Repeating any acknowledged send changes nothing: same id, flagged as a duplicate.
        for content, message_id in ledger.acked.items():
            resp = await http.post(
                f"/v1/sessions/{SESSION}/messages",
                json={"prompt": content},
                headers={"Idempotency-Key": ledger.keys[content]},
            )
            assert resp.status_code == 202, resp.text
            assert resp.json() == {"message_id": message_id, "duplicate": True}

        events = await all_events(http, SESSION)

    prompts = [e for e in events if e["type"] == "user.message"]
    counts = Counter(e["data"]["content"] for e in prompts)
    duplicated = {c: n for c, n in counts.items() if n > 1}
    assert duplicated == {}, f"stored more than once: {duplicated}"
    ids = {e["data"]["content"]: e["id"] for e in prompts}
    lost = {c: m for c, m in ledger.acked.items() if ids.get(c) != m}
    assert lost == {}, f"acknowledged but missing or changed: {json.dumps(lost)[:2000]}"
    assert len(prompts) == len(ledger.acked)

    # The counters written by the same scripts agree with the history itself.
    keys = K.session_keys(PREFIX, TENANT, SESSION)
    async with redis_client(redis.url) as client:
        stored = await client.llen(keys.history)
        counted = int(await client.hget(keys.meta, "events"))
        pending = await client.llen(keys.turns)
    assert stored == counted == len(events) == len(prompts)  # session.start is live only
    assert pending == len(prompts)  # no worker runs here: every turn is still queued
