"""Both framework adapters against two ``sessionctl serve`` processes on one Redis: writers on
either replica share one order of items, with nothing lost; the LangChain sync methods over
real HTTP."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from redis_sessions_client import SessionClient
from redis_sessions_client.agents import ServiceSession
from redis_sessions_client.langchain import ServiceChatMessageHistory

from tests.faults.conftest import Processes, RedisServers, create_tenant, wait_ready

pytestmark = pytest.mark.timeout(120)


async def test_adapters_on_two_replicas_keep_one_order(
    procs: Processes, redis_servers: RedisServers
) -> None:
    redis = redis_servers.start()
    key = await create_tenant(redis.url)
    replicas = [procs.api(redis.url), procs.api(redis.url)]
    for api in replicas:
        await wait_ready(api, procs)

    async with (
        SessionClient(replicas[0].url, api_key=key) as one,
        SessionClient(replicas[1].url, api_key=key) as two,
    ):
        writers = 16

        async def write(w: int) -> None:
            session = ServiceSession("shared", one if w % 2 else two)
            for b in range(4):
                await session.add_items(
                    [{"role": "user", "content": f"{w}:{b}:{k}"} for k in range(3)]
                )

        await asyncio.gather(*(write(w) for w in range(writers)))
        seen = [
            [i["content"] for i in await ServiceSession("shared", c).get_items()]
            for c in (one, two)
        ]
        assert seen[0] == seen[1]  # one order, whichever replica reads
        texts = seen[0]
        assert len(texts) == writers * 4 * 3  # nothing lost, nothing twice
        for i in range(0, len(texts), 3):  # batches whole
            assert len({t.rsplit(":", 1)[0] for t in texts[i : i + 3]}) == 1
        for w in range(writers):
            mine = [t for t in texts if t.startswith(f"{w}:")]
            assert mine == [f"{w}:{b}:{k}" for b in range(4) for k in range(3)]

        popped = await ServiceSession("shared", one).pop_item()
        assert popped == {"role": "user", "content": texts[-1]}
        assert len(await ServiceSession("shared", two).get_items()) == len(texts) - 1

    # LangChain: sync on one replica, async on the other, one history
    sync = ServiceChatMessageHistory("lc", base_url=replicas[0].url, api_key=key)
    async_ = ServiceChatMessageHistory("lc", base_url=replicas[1].url, api_key=key)
    try:
        await asyncio.to_thread(sync.add_messages, [HumanMessage("hi"), AIMessage("hello")])
        await async_.aadd_messages([HumanMessage("bye")])
        expected = [HumanMessage("hi"), AIMessage("hello"), HumanMessage("bye")]
        assert await asyncio.to_thread(lambda: sync.messages) == expected
        assert await async_.aget_messages() == expected
        await asyncio.to_thread(sync.clear)
        assert await async_.aget_messages() == []
    finally:
        await sync.aclose()
        await async_.aclose()
