"""``sessionctl serve`` asked to stop (SIGTERM, as on every pod rollout) while clients follow
event streams: the streams end at once, so clients can resume on another replica, and the
process exits within a couple of seconds, without a traceback."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from tests.faults.conftest import Processes, RedisServers, auth, create_tenant, wait_ready

STOPPED_WITHIN_S = 2.0


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_ends_open_streams_and_exits_at_once(
    procs: Processes, redis_servers: RedisServers, workers: int
) -> None:
    redis = redis_servers.start(persistent=False)
    key = await create_tenant(redis.url)
    api = procs.api(redis.url, SESSIONS_LOG_LEVEL="INFO")
    if workers > 1:  # the same, with uvicorn's process manager in front of two processes
        procs.kill(api.proc)
        api = procs.api_processes(redis.url, workers, SESSIONS_LOG_LEVEL="INFO")
    await wait_ready(api, procs)
    async with httpx.AsyncClient(base_url=api.url, headers=auth(key), timeout=30) as http:
        resp = await http.post("/v1/sessions", json={"session_id": "open"})
        assert resp.status_code == 201, resp.text
        ended: dict[str, float] = {}
        started = asyncio.Event()
        opened = 0

        async def follow(path: str) -> None:
            nonlocal opened
            async with http.stream("GET", path) as stream:
                assert stream.status_code == 200
                opened += 1
                if opened == 2 * workers:
                    started.set()
                async for _ in stream.aiter_bytes():
                    pass
            ended[path] = asyncio.get_running_loop().time()

        paths = ["/v1/sessions/open/events/stream", "/v1/lifecycle/stream"] * workers
        followers = [asyncio.create_task(follow(p)) for p in paths]
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        api.proc.send_signal(signal.SIGTERM)
        stopped_at = loop.time()
        await asyncio.wait_for(asyncio.gather(*followers), STOPPED_WITHIN_S + 5)
        assert max(ended.values()) - stopped_at <= STOPPED_WITHIN_S, ended
        code = await asyncio.to_thread(api.proc.wait, STOPPED_WITHIN_S + 5)
        exited_after = loop.time() - stopped_at
    assert exited_after <= STOPPED_WITHIN_S, exited_after
    # uvicorn re-raises the signal it stopped for once it is done: death by SIGTERM is a clean exit
    assert code in (0, -signal.SIGTERM), procs.output()
    log = procs.output()
    assert "Traceback" not in log and "Cancel" not in log, log
