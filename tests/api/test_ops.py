"""Health, readiness, metrics, OpenAPI, problem shapes, request ids, logs, and Redis outages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio
import structlog
from fastapi import FastAPI

from service.api.main import create_app
from service.config import LogFormat
from service.embedded import RedisProcess
from service.logging import configure_logging
from service.runtime import build_runtime
from tests.api.conftest import TenantKey, make_settings
from workers.queue import TurnQueue


async def test_livez_readyz(client: httpx.AsyncClient) -> None:
    r = await client.get("/livez")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_metrics_expose_requests_and_turns(
    client: httpx.AsyncClient, acme: TenantKey
) -> None:
    await client.post("/v1/sessions", json={"session_id": "m1"}, headers=acme.headers)
    await client.post("/v1/sessions/m1/messages", json={"prompt": "hi"}, headers=acme.headers)
    await client.get("/v1/sessions/nope", headers=acme.headers)
    await client.get("/no/such/route")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'sessions_http_requests_total{method="POST",route="/v1/sessions/{session_id}/messages",'
        'status="2xx"} 1.0'
    ) in text
    assert (
        'sessions_http_requests_total{method="GET",route="/v1/sessions/{session_id}",'
        'status="4xx"} 1.0'
    ) in text
    assert 'route="unmatched",status="4xx"} 1.0' in text
    assert "sessions_turns_enqueued_total 1.0" in text
    assert 'sessions_errors_total{type="SessionNotFound"} 1.0' in text
    assert "sessions_http_request_duration_seconds_bucket" in text
    assert "m1" not in text and "acme" not in text  # no session or tenant ids as labels


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path, method in [
        ("/v1/sessions", "post"),
        ("/v1/sessions", "get"),
        ("/v1/sessions/{session_id}", "patch"),
        ("/v1/sessions/{session_id}", "delete"),
        ("/v1/sessions/{session_id}/messages", "post"),
        ("/v1/sessions/{session_id}/abort", "post"),
        ("/v1/sessions/{session_id}/events", "get"),
        ("/v1/sessions/{session_id}/events/stream", "get"),
        ("/v1/sessions/{session_id}/bookmarks/{name}", "put"),
        ("/v1/sessions/{session_id}/bookmarks/{name}/messages", "get"),
        ("/v1/sessions/{session_id}/export", "get"),
        ("/v1/tenant", "get"),
        ("/v1/admin/tenants", "post"),
        ("/v1/admin/tenants/{tenant_id}/rotate-key", "post"),
        ("/v1/lifecycle", "get"),
        ("/v1/lifecycle/stream", "get"),
        ("/livez", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    schemas = r.json()["components"]["schemas"]
    assert {"SessionCreate", "SessionPublic", "SessionList", "SendMessage", "SendAccepted"} <= set(
        schemas
    )
    assert r.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    errors = paths["/v1/sessions"]["post"]["responses"]["4XX"]["content"]
    assert errors == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert "HTTPValidationError" not in schemas
    assert (await client.get("/docs")).status_code == 200


async def test_unknown_route_405_and_unexpected_errors_are_problems(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no such route",
    }
    r = await client.put("/v1/sessions")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"]

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    r = await client.get("/boom", headers={"X-Request-ID": "req-boom-1"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["X-Request-ID"] == "req-boom-1"
    assert "internal detail" not in r.text and "RuntimeError" not in r.text
    assert "req-boom-1" in r.json()["detail"]
    metrics = (await client.get("/metrics")).text
    assert 'sessions_errors_total{type="Unexpected"} 1.0' in metrics


async def test_request_id_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = await client.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["X-Request-ID"] != "bad id with spaces"
    assert len(r.headers["X-Request-ID"]) == 32
    r = await client.get("/v1/sessions")
    assert r.status_code == 401 and r.headers["X-Request-ID"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


async def test_logs_carry_request_and_tenant_but_no_prompt_or_key(
    client: httpx.AsyncClient,
    acme: TenantKey,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    # Configured here, not in a fixture: the captured stderr of the test body is a new one.
    configure_logging(make_settings("redis://unused", log_format=LogFormat.JSON, log_level="INFO"))
    secret = "TOP-SECRET-PROMPT-TEXT"
    await client.post("/v1/sessions", json={"session_id": "l1"}, headers=acme.headers)
    h = {**acme.headers, "X-Request-ID": "req-log-1"}
    r = await client.post("/v1/sessions/l1/messages", json={"prompt": secret}, headers=h)
    assert r.status_code == 202
    await client.post("/v1/sessions/l1/messages", json={"prompt": secret, "x": 1}, headers=h)
    await client.post(
        "/v1/sessions/l1/messages",
        content=f'{{"prompt": "{secret}"'.encode(),
        headers={**h, "Content-Type": "application/json"},
    )
    await client.get("/v1/sessions", headers={"Authorization": f"Bearer {acme.key}x"})
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    sent = [x for x in lines if x.get("request_id") == "req-log-1"]
    assert sent and sent[0]["event"] == "request" and sent[0]["tenant"] == "acme"
    assert sent[0]["route"] == "/v1/sessions/{session_id}/messages"
    assert sent[0]["status"] == 202 and sent[0]["level"] == "info"
    assert secret not in err
    assert acme.key not in err and acme.key[-20:] not in err


async def test_redis_outage_is_503_and_heals(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path, persistent=True, fsync="always").start()
    settings = make_settings(server.url)
    runtime = build_runtime(settings)
    queue = await TurnQueue.connect(settings)
    try:
        _, key = await runtime.tenants.create("acme")
        headers = {"Authorization": f"Bearer {key}"}
        app = create_app(settings, runtime=runtime, queue=queue)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/v1/sessions", json={"session_id": "s"}, headers=headers)
            assert r.status_code == 201
            server.stop()
            for method, url, body in [
                ("GET", "/v1/sessions/s", None),
                ("POST", "/v1/sessions/s/messages", {"prompt": "hi"}),
                ("GET", "/v1/admin/tenants", None),
                ("GET", "/readyz", None),
            ]:
                admin = {"Authorization": "Bearer admin-test-key-0123456789"}
                h = admin if "admin" in url else headers
                with structlog.testing.capture_logs() as logs:
                    r = await client.request(method, url, json=body, headers=h)
                assert r.status_code == 503, (url, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["title"] == "Store unavailable"
                # the request's log line says it, and why, where an operator looks
                (line,) = [x for x in logs if x["event"] == "request"]
                assert line["log_level"] == "warning" and line["status"] == 503, line
                assert line.get("detail") == r.json()["detail"], line
            assert (await client.get("/livez")).status_code == 200
            server.start()
            r = await client.get("/v1/sessions/s", headers=headers)
            assert r.status_code == 200, r.text
            r = await client.post("/v1/sessions/s/messages", json={"prompt": "hi"}, headers=headers)
            assert r.status_code == 202, r.text
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await queue.close()
        await runtime.close()
        server.stop()


async def test_lifespan_builds_and_closes_its_own_runtime(
    redis_server_url: str, real_redis
) -> None:
    settings = make_settings(redis_server_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.api
        assert state.runtime is not None and state.queue is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/readyz")).status_code == 200
    assert (await real_redis.ping()) is True


async def test_a_read_only_replica_is_not_ready(tmp_path: Path) -> None:
    """A static URL naming a replica (a node a failover demoted): PING answers, writes do not,
    so /readyz says which Redis is a replica instead of every write failing."""
    primary = RedisProcess(tmp_path / "primary", persistent=False).start()
    replica = RedisProcess(
        tmp_path / "replica",
        persistent=False,
        extra=["--replicaof", "127.0.0.1", str(primary.port)],
    ).start()
    admin = redis.asyncio.Redis.from_url(primary.url)
    # a user without @dangerous (ROLE, INFO): the roles cannot be told, so nothing is refused
    await admin.execute_command("ACL", "SETUSER", "svc", "on", ">pw", "~*", "+@all", "-@dangerous")
    await admin.aclose()
    limited = primary.url.replace("redis://", "redis://svc:pw@")
    try:
        for data, queue_url, which in [
            (replica.url, primary.url, "data"),
            (primary.url, replica.url, "queue"),
            (primary.url, primary.url, None),
            (limited, limited, None),
        ]:
            settings = make_settings(data, queue_redis_url=queue_url)
            runtime = build_runtime(settings)
            queue = await TurnQueue.connect(settings)
            app = create_app(settings, runtime=runtime, queue=queue)
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    r = await client.get("/readyz")
                if which is None:
                    assert r.status_code == 200, r.text
                else:
                    assert r.status_code == 503, r.text
                    assert f"the {which} Redis is a read-only replica" in r.json()["detail"]
            finally:
                await queue.close()
                await runtime.close()
    finally:
        replica.stop()
        primary.stop()
