"""Sentinel: the data store and the queue find their master through a real redis-sentinel."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.embedded import RedisProcess, free_port, redis_server_binary
from service.models import NewEvent
from service.runtime import build_runtime
from workers.queue import TurnQueue
from workers.settings import build_worker


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[str]:
    master = RedisProcess(tmp_path / "master", persistent=False).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    proc = subprocess.Popen(
        [redis_server_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        master.stop()


async def test_store_and_queue_through_sentinel(sentinel_setup: str) -> None:
    settings = Settings(redis_sentinels=sentinel_setup, key_prefix="sn")
    runtime = build_runtime(settings)
    for _ in range(100):  # the sentinel needs a moment to know its master
        with contextlib.suppress(Exception):
            await runtime.store.ping()
            break
        await asyncio.sleep(0.05)
    store = runtime.store.tenant("acme")
    await store.create("s", model="dev-echo")
    msg = await store.append(
        "s", [NewEvent(type="user.message", data={"content": "hi"})], enqueue_turn=True
    )
    queue = await TurnQueue.connect(settings)
    await queue.enqueue_turn("acme", "s", msg.event_ids[0])
    # the worker shares the queue's pool, so closing the queue closes its Sentinel links too
    worker = build_worker(
        settings, runtime=runtime, burst=True, max_burst_jobs=1, redis_pool=queue.pool
    )
    await worker.async_run()
    await worker.close()
    kinds = [e["type"] for e in await store.read_events("s")]
    assert kinds.count("assistant.message") == 1
    await queue.close()
    await runtime.close()
