"""What an operator sees of real ``sessionctl serve`` and ``worker`` processes: the request id
travels from the request's log line into the worker's lines for its turn, message content stays
out of the logs, the worker serves its metrics on their own port, and ``serve --workers 2``
answers every scrape with the figures of both processes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from service.embedded import free_port
from tests.faults.conftest import (
    Processes,
    RedisServers,
    auth,
    create_tenant,
    until,
    wait_ready,
)
from tests.logcheck import log_lines

SECRET = "a prompt nobody may read in the logs"


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of one series in exposition text (``labels`` as printed, e.g. ``a="b"``)."""
    series = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_request_id_reaches_the_worker_lines_of_its_turn(
    procs: Processes, redis_servers: RedisServers
) -> None:
    redis = redis_servers.start(persistent=False)
    key = await create_tenant(redis.url)
    metrics_port = free_port()
    api = procs.api(redis.url)
    procs.worker(redis.url, SESSIONS_WORKER_METRICS_PORT=str(metrics_port))
    await wait_ready(api, procs)
    async with httpx.AsyncClient(base_url=api.url, headers=auth(key), timeout=10) as http:
        created = await http.post("/v1/sessions", json={"model": "dev-echo"})
        session_id = created.json()["session_id"]
        sent = await http.post(
            f"/v1/sessions/{session_id}/messages",
            json={"prompt": SECRET},
            headers={"X-Request-ID": "req-observed-1"},
        )
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["message_id"]
        worker_log = procs.logs / "worker-1.log"

        def turn_logged() -> bool:
            return any(d["event"] == "turn.done" for d in log_lines(worker_log))

        await until(turn_logged, "the worker's turn.done line", procs, timeout=30)
        api_metrics = (await http.get("/metrics")).text
    async with httpx.AsyncClient(timeout=10) as http:
        worker_metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text

    request_line = next(
        d
        for d in log_lines(procs.logs / "api-0.log")
        if d["event"] == "request" and d.get("request_id") == "req-observed-1"
    )
    assert request_line["route"] == "/v1/sessions/{session_id}/messages"
    assert (request_line["tenant"], request_line["session"]) == ("acme", session_id)
    assert request_line["message"] == message_id
    done = next(d for d in log_lines(worker_log) if d["event"] == "turn.done")
    assert done["request_id"] == "req-observed-1"
    assert (done["tenant"], done["session"], done["message"]) == ("acme", session_id, message_id)
    for path in procs.logs.glob("*.log"):
        assert SECRET not in path.read_text(), path.name

    assert sample(worker_metrics, "sessions_worker_turns_total", 'outcome="answered"') == 1
    assert sample(worker_metrics, "process_cpu_seconds_total") is not None
    assert "_created" not in worker_metrics and "_created" not in api_metrics
    assert sample(api_metrics, "sessions_queue_jobs") is not None
    assert sample(api_metrics, "process_cpu_seconds_total") is not None


@pytest.mark.parametrize("job_timeout", ["120", "3"], ids=["drained", "handed-over"])
async def test_a_turn_answered_by_another_requests_job_never_carries_that_request_id(
    procs: Processes, redis_servers: RedisServers, job_timeout: str
) -> None:
    """A job answers every turn pending in its session: the second prompt of a session whose
    first is still streaming is answered by the first's job, or (past a quarter of a short
    job timeout) by the continuation it hands the rest to. Its lines name its own message, and
    never the first request's id; its own job, which found the session busy, logged its
    request id beside its message's."""
    redis = redis_servers.start(persistent=False)
    key = await create_tenant(redis.url)
    api = procs.api(redis.url)
    procs.worker(
        redis.url, SESSIONS_DEV_STREAM_DELAY_MS="100", SESSIONS_JOB_TIMEOUT_SECONDS=job_timeout
    )
    await wait_ready(api, procs)
    async with httpx.AsyncClient(base_url=api.url, headers=auth(key), timeout=10) as http:
        created = await http.post("/v1/sessions", json={"model": "dev-echo", "streaming": True})
        session_id = created.json()["session_id"]
        ids = {}
        for name in ("req-first", "req-second"):
            sent = await http.post(
                f"/v1/sessions/{session_id}/messages",
                json={"prompt": "a few words to stream slowly please"},
                headers={"X-Request-ID": name},
            )
            assert sent.status_code == 202, sent.text
            ids[name] = sent.json()["message_id"]
        worker_log = procs.logs / "worker-1.log"

        def done() -> list[dict[str, object]]:
            return [d for d in log_lines(worker_log) if d["event"] == "turn.done"]

        await until(lambda: len(done()) == 2, "two turn.done lines", procs, timeout=60)
    first, second = sorted(done(), key=lambda d: str(d["message"]))
    assert (first["message"], first["request_id"]) == (ids["req-first"], "req-first")
    assert second["message"] == ids["req-second"]
    assert second.get("request_id") in (None, "req-second"), second
    if second.get("request_id") is None:  # answered by the first's job: its own said so
        busy = [d for d in log_lines(worker_log) if d["event"] == "turn.job_busy"]
        assert any(
            (d.get("request_id"), d.get("message")) == ("req-second", ids["req-second"])
            for d in busy
        ), busy


async def test_serve_with_two_processes_counts_every_request_in_every_scrape(
    procs: Processes, redis_servers: RedisServers, tmp_path: Path
) -> None:
    redis = redis_servers.start(persistent=False)
    prom = tmp_path / "prom"
    port = free_port()
    proc = procs.spawn(
        "api",
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        procs.env(redis.url, PROMETHEUS_MULTIPROC_DIR=str(prom)),
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def both_started() -> bool:  # each process writes its counters to counter_<pid>.db
            return len(list(prom.glob("counter_*.db"))) >= 2

        await until(both_started, "two API processes", procs, timeout=60)
        requests = 30
        for _ in range(requests):  # a new connection each: the processes share the port
            async with httpx.AsyncClient(timeout=10) as http:
                for _ in range(100):
                    try:
                        resp = await http.get(url + "/livez", headers={"Connection": "close"})
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                assert resp.status_code == 200
        series = 'method="GET",route="/livez",status="2xx"'
        for _ in range(6):
            async with httpx.AsyncClient(timeout=10) as http:
                text = (await http.get(url + "/metrics", headers={"Connection": "close"})).text
            assert sample(text, "sessions_http_requests_total", series) == requests, text
            assert "_created" not in text
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn stops its own processes
        proc.wait(timeout=30)
