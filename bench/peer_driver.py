"""The peer side of ``bench.peer_bench``: the OpenAI Agents SDK's ``RedisSession`` doing the
benchmark's work, driven over stdin/stdout.

It runs in its own virtualenv (``.cache/bench-peer-venv``: the SDK needs a newer redis-py than
the service pins), imports nothing of this project, and answers one JSON line per command line:

    {"op": "hello"}                                   -> versions
    {"op": "append", "sessions": 8, "writers": 4, "per_writer": 50}
        -> {"n", "seconds", "attempts"}   (writers per session, each its own RedisSession)
    {"op": "fill", "session": "hist", "items": 1000}  -> {"n"}
    {"op": "read", "session": "hist", "iterations": 50} -> {"n", "seconds", "items"}
    {"op": "conversations", "prefix": "c", "sessions": 300, "contents": [...], "shape": "runner"}
        -> {"n"}   (sessions holding the conversation ``contents``: user, assistant in turn)
    {"op": "quit"}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version
from typing import Any

from agents.extensions.memory import RedisSession
from redis.asyncio import Redis

KEY_PREFIX = "peer:session"
TTL = 3600
ATTEMPTS = {"n": 0}


def _count_attempts() -> None:
    """Count transaction attempts (a WATCH conflict makes ``add_items`` try again)."""
    original = RedisSession._mutate_items_attempt

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        ATTEMPTS["n"] += 1
        return await original(self, *args, **kwargs)

    RedisSession._mutate_items_attempt = counted  # type: ignore[method-assign]


def _item(i: int, content: str) -> dict[str, str]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {content}"}


def _reply(n: int, text: str) -> dict[str, Any]:
    """An assistant reply as a ``Runner`` turn stores it: the model's output message (the
    Responses API sets every field below; the id has the API's length), as an input item."""
    from openai.types.responses import ResponseOutputMessage, ResponseOutputText

    message = ResponseOutputMessage(
        id=f"msg_{n:048x}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )
    item: dict[str, Any] = message.model_dump(exclude_unset=True)
    return item


async def main(url: str, content: str) -> None:
    _count_attempts()
    client = Redis.from_url(url, max_connections=128)

    def session(sid: str) -> RedisSession:
        return RedisSession(sid, redis_client=client, key_prefix=KEY_PREFIX, ttl=TTL)

    async def append(cmd: dict[str, Any]) -> dict[str, Any]:
        per_writer = int(cmd["per_writer"])

        async def writer(sid: str) -> None:
            s = session(sid)
            for i in range(per_writer):
                await s.add_items([_item(i, content)])  # type: ignore[list-item]

        sids = [f"w{n}" for n in range(int(cmd["sessions"]))]
        ATTEMPTS["n"] = 0
        start = time.perf_counter()
        await asyncio.gather(*(writer(sid) for sid in sids for _ in range(int(cmd["writers"]))))
        seconds = time.perf_counter() - start
        n = len(sids) * int(cmd["writers"]) * per_writer
        return {"n": n, "seconds": seconds, "attempts": ATTEMPTS["n"]}

    async def fill(cmd: dict[str, Any]) -> dict[str, Any]:
        s = session(cmd["session"])
        await s.clear_session()
        items = [_item(i, content) for i in range(int(cmd["items"]))]
        for start in range(0, len(items), 100):
            await s.add_items(items[start : start + 100])  # type: ignore[arg-type]
        return {"n": len(await s.get_items())}

    async def read(cmd: dict[str, Any]) -> dict[str, Any]:
        s = session(cmd["session"])
        n = int(cmd["iterations"])
        got = 0
        start = time.perf_counter()
        for _ in range(n):
            got = len(await s.get_items())
        return {"n": n, "seconds": time.perf_counter() - start, "items": got}

    async def conversations(cmd: dict[str, Any]) -> dict[str, Any]:
        """Each turn as ``Runner.run(agent, prompt, session=...)`` saves it: the prompt as an
        easy input message, then the reply (``shape`` "runner") or, with "plain", the reply as
        an easy message too."""
        contents: list[str] = cmd["contents"]

        async def one(i: int) -> None:
            s = session(f"{cmd['prefix']}{i:05d}")
            for n in range(0, len(contents), 2):
                await s.add_items([{"role": "user", "content": contents[n]}])  # type: ignore[list-item]
                reply = contents[n + 1]
                item = _reply(i * 1000 + n, reply) if cmd["shape"] == "runner" else {
                    "role": "assistant", "content": reply}  # fmt: skip
                await s.add_items([item])  # type: ignore[list-item]

        gate = asyncio.Semaphore(25)

        async def gated(i: int) -> None:
            async with gate:
                await one(i)

        await asyncio.gather(*(gated(i) for i in range(int(cmd["sessions"]))))
        return {"n": int(cmd["sessions"])}

    ops = {"append": append, "fill": fill, "read": read, "conversations": conversations}
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            if cmd["op"] == "hello":
                out: dict[str, Any] = {
                    "openai-agents": version("openai-agents"),
                    "redis": version("redis"),
                    "hiredis": _installed("hiredis"),
                }
            else:
                out = await ops[cmd["op"]](cmd)
        except Exception as exc:  # reported to the caller, which fails the benchmark
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)
    await client.aclose()


def _installed(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "no"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
