"""An API process that falls behind the live window (SIGSTOP: a VM freeze, a long GC pause)
while the tenant's other sessions go on writing: the window is trimmed past events its open
streams had not yet served. They are told to re-read the history (``session.resync``), and a
client's handle does, so nothing is missed, and nothing waits in silence."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest
from redis_sessions_client import SessionClient

from service import keys as K
from service.config import Settings
from service.models import NewEvent
from service.runtime import Runtime
from tests.faults.conftest import (
    PREFIX,
    TENANT,
    Processes,
    RedisServers,
    auth,
    create_tenant,
    until,
    wait_ready,
)

WINDOW = 100  # the smallest live window (entries): the writer trims to it


@pytest.fixture
def settings(redis_servers: RedisServers) -> Settings:
    url = redis_servers.start(persistent=False).url
    return Settings(redis_url=url, key_prefix=PREFIX, live_window_events=WINDOW)


async def read_frames(http: httpx.AsyncClient, path: str, out: list[dict[str, Any]]) -> None:
    async with http.stream("GET", path) as resp:
        assert resp.status_code == 200
        kind = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append({"type": kind, "data": json.loads(line[6:])})


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_stream_that_falls_behind_the_window_is_told_and_its_client_catches_up(
    procs: Processes, runtime: Runtime
) -> None:
    url = runtime.settings.redis_url
    assert url is not None
    key = await create_tenant(url)
    store = runtime.store.tenant(TENANT)
    await store.create("watched", model="m")
    await store.create("busy", model="m")
    api = procs.api(url)
    await wait_ready(api, procs)
    frames: list[dict[str, Any]] = []
    seen: list[str] = []
    async with (
        httpx.AsyncClient(base_url=api.url, headers=auth(key), timeout=30) as http,
        SessionClient(api.url, api_key=key) as client,
    ):
        reader = asyncio.create_task(
            read_frames(http, "/v1/sessions/watched/events/stream", frames)
        )
        changes: list[dict[str, Any]] = []
        lifecycle = asyncio.create_task(read_frames(http, "/v1/lifecycle/stream", changes))
        await store.create("doomed", model="m")
        doomed_frames: list[dict[str, Any]] = []
        doomed = asyncio.create_task(
            read_frames(http, "/v1/sessions/doomed/events/stream", doomed_frames)
        )
        session = await client.resume_session("watched")
        session.on("user.message", lambda event: seen.append(event.data["content"]))
        await store.append("watched", [NewEvent(type="user.message", data={"content": "one"})])
        await until(lambda: "one" in seen and len(frames) >= 1, "the streams", procs, 15)

        api.proc.send_signal(signal.SIGSTOP)
        try:
            # the reader's read in flight ends with an entry of another session; the next
            # read would start past "missed", which the writers trim away meanwhile
            await store.append("busy", [NewEvent(type="user.message", data={"content": "b"})])
            await store.append(
                "watched", [NewEvent(type="user.message", data={"content": "missed"})]
            )
            for i in range(10 * WINDOW):
                await store.append("busy", [NewEvent(type="session.idle", data={"n": i})])
            assert len(await runtime.redis.xrange(store._live_key("busy"))) < 5 * WINDOW
            # the tenant's lifecycle stream, trimmed as 10,000 changes would trim it: with the
            # end of a session whose stream is open
            await store.delete("doomed")
            for sid in ("made", "gone"):
                await store.create(sid, model="m")
            await store.delete("gone")
            await store.create("last", model="m")
            changes_key = K.lifecycle_key(PREFIX, TENANT)
            newest = (await runtime.redis.xrevrange(changes_key, count=1))[0][0]
            await runtime.redis.xtrim(changes_key, minid=newest, approximate=False)
        finally:
            api.proc.send_signal(signal.SIGCONT)

        await until(lambda: "missed" in seen, "the handle to catch up", procs, 20)

        def resyncs() -> list[dict[str, Any]]:
            return [f for f in frames if f["type"] == "session.resync"]

        await until(lambda: bool(resyncs()), "the stream's resync", procs, 10)
        resync = resyncs()[0]
        assert resync["data"]["reason"] == "the stream fell behind the live window"
        assert seen == ["one", "missed"]  # once each
        await store.append("watched", [NewEvent(type="user.message", data={"content": "on"})])
        await until(lambda: seen[-1:] == ["on"], "the events after it", procs, 15)
        # the stream of the session whose end was trimmed unread ends at once all the same
        await until(
            lambda: any(f["type"] == "session.expired" for f in doomed_frames),
            "the end of the deleted session's stream",
            procs,
            10,
        )
        # the lifecycle stream is told too: its consumer re-lists the sessions
        await until(
            lambda: any(c["type"] == "lifecycle.resync" for c in changes),
            "the lifecycle stream's resync",
            procs,
            10,
        )
        await store.create("after", model="m")
        await until(
            lambda: bool(changes) and changes[-1]["data"].get("session_id") == "after",
            "the changes after it",
            procs,
            10,
        )
        for task in (reader, lifecycle, doomed):
            task.cancel()
        await asyncio.gather(reader, lifecycle, doomed, return_exceptions=True)
