"""Tracing: one trace from the HTTP request through the queue to the worker's turn and its
provider call, with Redis commands as child spans. The API and the real arq worker run in this
process on the suite's real Redis; spans go to the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service import tracing
from service.api.main import create_app
from service.config import Settings
from service.runtime import Runtime
from tests.workers.conftest import WorkerFactory, wait_idle
from workers.queue import TurnQueue

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def settings(redis_server_url: str) -> Settings:
    return Settings(
        redis_url=redis_server_url,
        key_prefix="wt",
        job_timeout_seconds=20,
        worker_poll_delay_seconds=0.005,
        rate_limit_per_second=0,
    )


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    assert tracing.configure_tracing("redis-sessions-test", provider=provider)
    try:
        yield spans
    finally:
        tracing.shutdown_tracing()
        provider.shutdown()


@pytest.fixture
async def client(runtime: Runtime, queue: TurnQueue) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime.settings, runtime=runtime, queue=queue)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_send_is_one_trace_from_request_to_provider(
    exporter: InMemorySpanExporter,
    runtime: Runtime,
    client: httpx.AsyncClient,
    start_worker: WorkerFactory,
) -> None:
    _, key = await runtime.tenants.create("acme")
    auth = {"Authorization": f"Bearer {key}"}
    created = await client.post("/v1/sessions", json={"model": "dev-echo"}, headers=auth)
    session_id = created.json()["session_id"]
    await runtime.store.tenant("acme").update(session_id, summary="titled")  # no title job
    await start_worker()
    sent = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"prompt": "trace me"},
        headers={**auth, "traceparent": PARENT},
    )
    assert sent.status_code == 202, sent.text
    await wait_idle(runtime.store.tenant("acme"), session_id)
    trace = int(TRACE_ID, 16)
    spans: list[ReadableSpan] = []
    for _ in range(200):  # the job span ends just after the turn's last write
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace]
        if any(s.name == "job run_turn" for s in spans):
            break
        await asyncio.sleep(0.02)

    http = one(spans, "POST /v1/sessions/{session_id}/messages")
    enqueue = one(spans, "enqueue run_turn")
    job = one(spans, "job run_turn")
    provider = one(spans, "provider dev")
    assert http.kind is SpanKind.SERVER and parent_of(http) == int("b7ad6b7169203331", 16)
    assert http.attributes is not None and http.attributes["http.response.status_code"] == 202
    assert enqueue.kind is SpanKind.PRODUCER and parent_of(enqueue) == http.context.span_id
    assert job.kind is SpanKind.CONSUMER and parent_of(job) == enqueue.context.span_id
    assert provider.kind is SpanKind.CLIENT and parent_of(provider) == job.context.span_id

    redis = [s for s in spans if s.attributes and s.attributes.get("db.system") == "redis"]
    parents = {parent_of(s) for s in redis}
    # the append in the request, the job record in the enqueue, the turn's reads and writes
    assert {http.context.span_id, enqueue.context.span_id, job.context.span_id} <= parents
    assert all(s.kind is SpanKind.CLIENT for s in redis)
    # a command outside any request or job (the worker polling its queue) starts no trace
    lone = [
        s.name
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("db.system") == "redis" and s.parent is None
    ]
    assert lone == []


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.enabled()
    with tracing.span("anything") as span:
        assert span is None
    assert tracing.carrier() is None


async def test_commands_in_untraced_blocks_make_no_span(
    exporter: InMemorySpanExporter, runtime: Runtime
) -> None:
    """What a long-lived stream checks every second (its key, the session) stays out of its
    request's trace."""
    with tracing.span("a stream's request"):
        await runtime.redis.get("traced")
        with tracing.untraced():
            await runtime.redis.exists("untraced")
    names = [s.name for s in exporter.get_finished_spans()]
    assert "GET" in names and "EXISTS" not in names, names
