"""The smallest FastAPI app doing the Redis work of a send and of a history read: the API
benchmark's baseline.

No auth, no validation, no limits, no metrics, no logging, no atomicity; raw redis-py:
- ``POST /sessions/{sid}/messages`` with ``{"prompt": ...}``: one pipelined round trip of XADD
  (the event, stored as the service stores it), HSET (metadata), and a queue entry shaped like
  an arq job (a SET of the job payload with an expiry, a ZADD to the queue): the data a send
  writes, without any of its checks. Answers 202 ``{"message_id", "duplicate"}``.
- ``GET /sessions/{sid}/events``: XRANGE of up to 1,000 entries, each decoded and returned as
  ``{"data": [{"id", "type", "data"}, ...]}`` (orjson both ways).
- ``GET /readyz``: PING.

Run: ``python -m bench.minimal_app --port P`` with ``BENCH_REDIS_URL`` set; it runs under
uvicorn with the same options ``sessionctl serve`` uses.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis

PREFIX = "min"
JOB_TTL_MS = 86_400_000


def create_app() -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["redis"] = Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
        yield
        await state["redis"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> Response:
        await state["redis"].ping()
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/sessions/{sid}/messages")
    async def send(sid: str, request: Request) -> Response:
        prompt = orjson.loads(await request.body())["prompt"]
        body = orjson.dumps({"type": "user.message", "data": {"content": prompt}})
        now = int(time.time() * 1000)
        pipe = state["redis"].pipeline(transaction=False)
        pipe.xadd(f"{PREFIX}:{{{sid}}}:events", {"e": body})
        pipe.hset(f"{PREFIX}:{{{sid}}}:meta", mapping={"modified": now})
        job_id = f"turn:{sid}:{now}:{id(request)}"
        pipe.set(f"{PREFIX}:job:{job_id}", b"x" * 120, px=JOB_TTL_MS)
        pipe.zadd(f"{PREFIX}:queue", {job_id: now})
        event_id = (await pipe.execute())[0]
        return Response(
            orjson.dumps({"message_id": event_id, "duplicate": False}),
            status_code=202,
            media_type="application/json",
        )

    @app.get("/sessions/{sid}/events")
    async def events(sid: str) -> Response:
        rows = await state["redis"].xrange(f"{PREFIX}:{{{sid}}}:events", "-", "+", count=1000)
        data = [{"id": eid, **orjson.loads(fields["e"])} for eid, fields in rows]
        return Response(orjson.dumps({"data": data}), media_type="application/json")

    return app


def main() -> None:
    import uvicorn

    from service.cli.serve import uvicorn_options

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    options = uvicorn_options(
        argparse.Namespace(
            host=args.host, port=args.port, workers=1, proxy_headers=False, forwarded_allow_ips=None
        )
    )
    uvicorn.run("bench.minimal_app:create_app", **options)


if __name__ == "__main__":
    main()
