"""The API as the chart runs it, behind an ingress: the command and settings of the rendered API
container (production values and defaults), started against a real Redis and sent forged
X-Forwarded-For headers. Whatever a client writes into the header must not choose the address its
key failures are counted against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from service.api.limits import AUTH_FAILURES_PER_WINDOW
from service.tenants import TenantRegistry
from tests.deploy.conftest import Renderer
from tests.deploy.manifests import by_kind, containers, one
from tests.security.conftest import LiveServer, spawn_server, stop_server

Manifest = dict[str, Any]
ATTACKER = "198.51.100.66"  # the address the ingress sees for the attacker


def api_command(objects: list[Manifest]) -> tuple[list[str], dict[str, str]]:
    """The ``sessionctl serve`` arguments (after ``serve``) and the plain settings (ConfigMap
    and literal env entries) of the rendered API container."""
    (api,) = [c for c in containers(one(objects, "Deployment", "api")) if c["name"] == "api"]
    command = [*api.get("command", []), *api.get("args", [])]
    assert command[:2] == ["sessionctl", "serve"], command
    config_maps = {o["metadata"]["name"]: o for o in by_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in api.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
    assert "SESSIONS_KEY_PREFIX" in env, api.get("envFrom")
    env.update({e["name"]: str(e["value"]) for e in api.get("env", []) if "value" in e})
    return command[2:], env


def with_local_address(args: list[str]) -> list[str]:
    """``args`` without their --host/--port (the test binds its own loopback port)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--host", "--port"):
            skip = True
        else:
            out.append(arg)
    return out


@pytest.fixture
def start(redis_server_url: str, tmp_path: Path) -> Iterator[Any]:
    servers: list[LiveServer] = []

    def _start(objects: list[Manifest]) -> tuple[LiveServer, str]:
        args, env = api_command(objects)
        for name in ("SESSIONS_REDIS_CLUSTER", "SESSIONS_REDIS_URL"):
            env.pop(name, None)  # the test's Redis: one server
        prefix = "proxytest"
        env.update(SESSIONS_KEY_PREFIX=prefix, SESSIONS_RATE_LIMIT_PER_SECOND="0")
        server = spawn_server(
            redis_server_url,
            tmp_path / f"api{len(servers)}.log",
            *with_local_address(args),
            env=env,
        )
        servers.append(server)
        return server, prefix

    yield _start
    for server in servers:
        stop_server(server)


async def counters(redis: Redis, prefix: str) -> list[str]:
    pattern = f"{prefix}:_tenants:{{admin}}:failures:*"
    return sorted([k.rsplit(":", 1)[1] async for k in redis.scan_iter(match=pattern)])


async def test_production_values_count_the_address_the_ingress_saw(
    render: Renderer, production_values: Path, start: Any, real_redis: Redis
) -> None:
    server, prefix = start(render([production_values]))
    tenant = await new_tenant_with_prefix(real_redis, prefix, "alpha")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for i in range(AUTH_FAILURES_PER_WINDOW * 2):
            # The attacker writes a fresh address each time; the ingress appends the real one.
            forged = {"X-Forwarded-For": f"10.0.{i}.1, {ATTACKER}"}
            r = await http.get(
                "/v1/sessions", headers={"Authorization": f"Bearer sk_alpha_g{i}", **forged}
            )
            assert r.status_code == (401 if i < AUTH_FAILURES_PER_WINDOW else 429), i
        # A victim the attacker names in its header is not locked out.
        victim = {"Authorization": "Bearer sk_alpha_typo", "X-Forwarded-For": "10.0.0.1"}
        assert (await http.get("/v1/sessions", headers=victim)).status_code == 401
        ok = {**tenant, "X-Forwarded-For": f"203.0.113.9, {ATTACKER}"}
        assert (await http.get("/v1/sessions", headers=ok)).status_code == 200
    assert await counters(real_redis, prefix) == ["10.0.0.1", ATTACKER]


async def test_default_values_ignore_the_header(
    render: Renderer, start: Any, real_redis: Redis
) -> None:
    server, prefix = start(render())
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for i in range(AUTH_FAILURES_PER_WINDOW + 1):
            forged = {"X-Forwarded-For": f"10.0.{i}.1", "Authorization": f"Bearer sk_a_g{i}"}
            r = await http.get("/v1/sessions", headers=forged)
            assert r.status_code == (401 if i < AUTH_FAILURES_PER_WINDOW else 429), i
    assert await counters(real_redis, prefix) == ["127.0.0.1"]


async def new_tenant_with_prefix(redis: Redis, prefix: str, tenant_id: str) -> dict[str, str]:
    _, key = await TenantRegistry(redis, prefix).create(tenant_id)
    return {"Authorization": f"Bearer {key}"}
