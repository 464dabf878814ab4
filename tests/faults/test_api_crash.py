"""An API replica killed (SIGKILL) while a client follows a session's events over SSE: the client
resumes on another replica with ``Last-Event-ID`` and ends up with every stored event, in order,
none twice, none missing. Once with raw httpx, once through the Python client's ``Session.on``
behind a failover transport (what a load balancer in front of the replicas does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis_sessions_client import SessionClient
from redis_sessions_client._models import Event
from redis_sessions_client._sse import aiter_sse

from tests.faults.conftest import (
    Api,
    Processes,
    RedisServers,
    all_events,
    auth,
    create_tenant,
    until,
    wait_ready,
)

SESSION = "followed"
PROMPTS = 8
WORKER_ENV = {"SESSIONS_DEV_STREAM_DELAY_MS": "10"}


@dataclass
class Cluster:
    """Two API replicas and one worker on one Redis, and a tenant key."""

    api1: Api
    api2: Api
    key: str
    procs: Processes


@pytest.fixture
async def cluster(procs: Processes, redis_servers: RedisServers) -> Cluster:
    redis = redis_servers.start(persistent=False)
    key = await create_tenant(redis.url)
    api1, api2 = procs.api(redis.url), procs.api(redis.url)
    procs.worker(redis.url, **WORKER_ENV)
    await asyncio.gather(wait_ready(api1, procs), wait_ready(api2, procs))
    return Cluster(api1, api2, key, procs)


@contextlib.asynccontextmanager
async def producing(http: httpx.AsyncClient) -> AsyncIterator[asyncio.Task[None]]:
    """Prompts sent one after another (through replica 2), each streamed back word by word
    by the worker: events keep coming while replica 1 is killed."""

    async def produce() -> None:
        for i in range(PROMPTS):
            prompt = f"prompt {i}: tell me something long enough to stream for a while"
            resp = await http.post(f"/v1/sessions/{SESSION}/messages", json={"prompt": prompt})
            assert resp.status_code == 202, resp.text
            await asyncio.sleep(0.3)

    task = asyncio.create_task(produce())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def settled(http: httpx.AsyncClient, procs: Processes) -> list[dict[str, Any]]:
    """The events followers were sent (the live window) once every prompt is answered and the
    session is idle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        events = await all_events(http, SESSION, live=True)
        replies = [e for e in events if e["type"] == "assistant.message"]
        if len(replies) == PROMPTS and events[-1]["type"] == "session.idle":
            return events
        assert loop.time() < deadline, f"turns not answered\n{procs.output()}"
        await asyncio.sleep(0.1)


def mid_turn(types: list[str]) -> bool:
    """Enough events seen, and the last one is a streamed delta: a turn is being answered."""
    return len(types) >= 20 and types[-1] == "assistant.message_delta"


@dataclass
class Follower:
    """A raw SSE follower that reconnects to the next replica with ``Last-Event-ID``."""

    key: str
    events: list[dict[str, Any]] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)  # replica of each event
    drops: list[str] = field(default_factory=list)

    async def follow(self, urls: list[str]) -> None:
        last_id: str | None = None
        async with httpx.AsyncClient(headers=auth(self.key), timeout=30) as http:
            for url in urls:
                headers = {"Accept": "text/event-stream"}
                if last_id is not None:
                    headers["Last-Event-ID"] = last_id
                path = f"{url}/v1/sessions/{SESSION}/events/stream"
                try:
                    async with http.stream("GET", path, headers=headers) as resp:
                        assert resp.status_code == 200
                        async for sse in aiter_sse(resp):
                            event = json.loads(sse.data)
                            # a live position, or the id of an event replayed from history
                            assert sse.id.startswith("L") or sse.id == event["id"]
                            self.events.append(event)
                            self.served_by.append(url)
                            last_id = sse.id
                except httpx.TransportError as exc:  # the replica died under the stream
                    self.drops.append(repr(exc))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_replica_killed_mid_stream_loses_and_repeats_no_event(cluster: Cluster) -> None:
    procs, api1, api2 = cluster.procs, cluster.api1, cluster.api2
    follower = Follower(cluster.key)
    async with httpx.AsyncClient(base_url=api2.url, headers=auth(cluster.key), timeout=30) as http:
        resp = await http.post("/v1/sessions", json={"session_id": SESSION, "streaming": True})
        assert resp.status_code == 201, resp.text
        following = asyncio.create_task(follower.follow([api1.url, api2.url]))
        try:
            async with producing(http) as produce:
                await until(
                    lambda: mid_turn([e["type"] for e in follower.events]),
                    "a turn mid-stream",
                    procs,
                    30,
                )
                procs.kill(api1.proc)
                await asyncio.wait_for(produce, 30)
            # the follower subscribed after the session started: all that came after
            stored = [e for e in await settled(http, procs) if e["type"] != "session.start"]
            await until(lambda: len(follower.events) >= len(stored), "the follower", procs, 30)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)

    assert len(follower.drops) == 1, follower.drops
    # Both replicas served part of the stream, and the union is exactly what is stored.
    assert api1.url in follower.served_by and api2.url in follower.served_by
    assert [e["id"] for e in follower.events] == [e["id"] for e in stored]
    assert follower.events == stored


class Failover(httpx.AsyncBaseTransport):
    """Sends each request to the first replica that accepts a connection, as a load balancer
    does; once one refuses, later requests go to the next one."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.current = 0
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        while True:
            request.url = request.url.copy_with(port=self.ports[self.current])
            try:
                return await self.inner.handle_async_request(request)
            except httpx.ConnectError:
                if self.current == len(self.ports) - 1:
                    raise
                self.current += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_session_on_resumes_on_another_replica_without_gap_or_repeat(
    cluster: Cluster,
) -> None:
    procs, api1, api2 = cluster.procs, cluster.api1, cluster.api2
    received: list[Event] = []
    transport = Failover([api1.port, api2.port])
    async with (
        SessionClient(api1.url, api_key=cluster.key, transport=transport) as client,
        httpx.AsyncClient(base_url=api2.url, headers=auth(cluster.key), timeout=30) as http,
    ):
        session = await client.create_session({"session_id": SESSION, "streaming": True})
        assert session.info.last_event_id == ""  # nothing durable yet: follows from the start
        unsubscribe = session.on(received.append)
        try:
            async with producing(http) as produce:
                await until(
                    lambda: mid_turn([e.type for e in received]), "a turn mid-stream", procs, 30
                )
                assert transport.current == 0  # still on replica 1
                procs.kill(api1.proc)
                await asyncio.wait_for(produce, 30)
            stored = await settled(http, procs)
            expected = [e for e in stored if e["type"] != "session.start"]
            await until(lambda: len(received) >= len(expected), "the listener", procs, 30)
        finally:
            unsubscribe()
            await session.disconnect()

    assert transport.current == 1  # the listener reconnected through replica 2
    assert [e.id for e in received] == [e["id"] for e in expected]
    assert [(e.type, e.data) for e in received] == [(e["type"], e["data"]) for e in expected]
