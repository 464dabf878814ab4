"""The worker's poll through a queue Redis that is gone: nothing escapes that would end the
process, and no job slot is lost to it."""

from __future__ import annotations

import socket

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.settings import QueueTolerantWorker


async def noop(ctx: dict[str, object]) -> None:
    return None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def worker() -> QueueTolerantWorker:
    pool = ArqRedis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    return QueueTolerantWorker(functions=[noop], redis_pool=pool, max_jobs=2, handle_signals=False)


async def test_a_job_start_that_cannot_reach_redis_gives_its_slot_back(
    worker: QueueTolerantWorker,
) -> None:
    free = worker.sem._value
    for _ in range(5):  # more failures than slots: a leak would show as a stuck semaphore
        with pytest.raises(RedisConnectionError):
            await worker.start_jobs([b"job-1", b"job-2"])
    assert worker.job_counter == 0
    assert worker.sem._value == free


async def test_a_poll_that_cannot_reach_redis_is_survived(worker: QueueTolerantWorker) -> None:
    await worker._poll_iteration()  # logs, pauses, returns
    assert worker.job_counter == 0
