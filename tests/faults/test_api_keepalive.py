"""``sessionctl serve`` keeps an idle connection open longer than clients and load balancers
do, so that the client, not the server, closes it: a request sent just as the server closed an
idle connection would fail with a reset ("server disconnected") that no retry policy can tell
from a lost request."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.cli.serve import KEEP_ALIVE_S
from tests.faults.conftest import Processes, RedisServers, wait_ready

IDLE_S = 6.0  # past uvicorn's default keep-alive (5 s), the client pool's own default


@pytest.mark.slow
async def test_an_idle_connection_outlives_the_clients_pool_timeout(
    procs: Processes, redis_servers: RedisServers
) -> None:
    assert KEEP_ALIVE_S > 60  # past common load balancer idle timeouts too
    redis = redis_servers.start(persistent=False)
    api = procs.api(redis.url)
    await wait_ready(api, procs)
    ports: list[int] = []

    async def log_port(response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        ports.append(stream.get_extra_info("client_addr")[1])

    limits = httpx.Limits(max_connections=1, keepalive_expiry=IDLE_S * 3)
    async with httpx.AsyncClient(
        base_url=api.url, limits=limits, event_hooks={"response": [log_port]}
    ) as http:
        assert (await http.get("/livez")).status_code == 200
        await asyncio.sleep(IDLE_S)
        assert (await http.get("/livez")).status_code == 200
    assert len(ports) == 2 and ports[0] == ports[1]  # the same connection, still open
