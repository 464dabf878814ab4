"""Real worker processes (``sessionctl worker``) against a real Redis: ordering and crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.runtime import Runtime
from tests.logcheck import assert_json_logs
from tests.workers.conftest import send, wait_idle
from workers.queue import TurnQueue

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """Worker processes started for one test; all are stopped after it."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.redis_url = redis_url
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        full = {
            **os.environ,
            "SESSIONS_REDIS_URL": self.redis_url,
            "SESSIONS_KEY_PREFIX": "wt",
            "SESSIONS_WORKER_POLL_DELAY_SECONDS": "0.005",
            "SESSIONS_LOG_LEVEL": "INFO",  # every line is checked after the test
            "SESSIONS_LOG_FORMAT": "json",
            **env,
        }
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", "worker"],
            env=full,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert_json_logs(self.tmp, "worker-*.log")


@pytest.fixture
def settings(redis_server_url: str) -> Settings:
    """Worker processes read their settings from the environment: single Redis here."""
    return Settings(redis_url=redis_server_url, key_prefix="wt", worker_poll_delay_seconds=0.005)


@pytest.fixture
def workers(redis_server_url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(redis_server_url, tmp_path)
    yield w
    w.stop_all()


@pytest.mark.slow
async def test_100_prompts_10_senders_4_workers_in_order_without_overlap(
    runtime: Runtime, queue: TurnQueue, workers: Workers
) -> None:
    # the whole timeline (every delta of 100 streamed turns) is read back from the live window:
    # a window that keeps all of it
    window = "1000000"
    runtime.store.live_window_events = int(window)
    store = runtime.store.tenant("acme")
    await store.create("busy", model="dev-echo", streaming=True)
    for _ in range(4):
        workers.start(SESSIONS_LIVE_WINDOW_EVENTS=window)

    async def sender(n: int) -> None:
        for i in range(10):
            await send(store, queue, "busy", f"sender {n} prompt {i}")

    await asyncio.gather(*(sender(n) for n in range(10)))
    events = await wait_idle(store, "busy", timeout=90)
    prompts = [e["id"] for e in events if e["type"] == "user.message"]
    replies = [e for e in events if e["type"] == "assistant.message"]
    assert len(prompts) == 100
    assert len(replies) == 100
    # each reply answers its own prompt, in the order the prompts were appended
    assert [r["data"]["reply_to"] for r in replies] == prompts
    position = {e["id"]: i for i, e in enumerate(events)}
    for reply in replies:
        assert position[reply["id"]] > position[reply["data"]["reply_to"]]
    # no two turns overlap: between a turn's start and its end only its own events appear
    current = None
    for e in events:
        if e["type"] == "assistant.turn_start":
            assert current is None, "a turn started while another was running"
            current = e["data"]["turnId"]
        elif e["type"] in ("assistant.message_delta", "assistant.message"):
            assert e["data"]["reply_to"] == current
        elif e["type"] == "assistant.turn_end":
            assert e["data"]["turnId"] == current
            current = None
    assert current is None


@pytest.mark.slow
async def test_worker_killed_mid_turn_still_yields_exactly_one_reply(
    runtime: Runtime, queue: TurnQueue, workers: Workers
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("crash", model="dev-echo", streaming=True)
    # arq retries a dead worker's job after its timeout + 10 s; the turn itself takes ~2.5 s
    slow = {"SESSIONS_DEV_STREAM_DELAY_MS": "60", "SESSIONS_JOB_TIMEOUT_SECONDS": "5"}
    victim = workers.start(**slow)
    prompt = await send(store, queue, "crash", "please answer slowly with many words " * 3)
    for _ in range(500):
        kinds = [e["type"] for e in await store.live_events("crash")]
        if "assistant.message_delta" in kinds:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the worker never started streaming")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert "assistant.message" not in [e["type"] for e in await store.read_events("crash")]
    workers.start(**slow)
    events = await wait_idle(store, "crash", timeout=60)
    replies = [e for e in events if e["type"] == "assistant.message"]
    assert len(replies) == 1
    assert replies[0]["data"]["reply_to"] == prompt
    assert await store.pending_turns("crash") == []
