"""The smallest FastAPI app sending Redis the same commands as the API's send and history read:
the API benchmark's baseline.

Raw redis-py, on the same keys with the same scripts and arguments, but none of the API's
Python around them: no key check (the tenant record and the failure counter are read, never
looked at), no validation, no limits, no metrics, no logging.
- ``POST /sessions/{sid}/messages`` with ``{"prompt": ...}``: reads the key failure counter of
  the client address with the tenant record (one script), runs the append script (the
  ``user.message`` and its pending turn) and then the enqueue script (the arq job record and
  queue entry). Answers 202 ``{"message_id", "duplicate"}``.
- ``GET /sessions/{sid}/events``: the same read, then the history page in one pipeline (the
  session's id and history base, the earlier layout's key, the first 1,000 items), each item
  decoded and returned as ``{"data": [{"id", "type", "data"}, ...]}`` (orjson both ways).
- ``GET /readyz``: PING.

The benchmark checks that both apps send Redis the same commands per request. Run:
``python -m bench.minimal_app --port P`` with the API's ``SESSIONS_*`` environment (Redis URL,
key prefix, index shards); it runs under uvicorn with the same options ``sessionctl serve`` uses.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis

from service import keys as K
from service.api.limits import WINDOW_READ, auth_failures_key
from service.config import Settings
from service.scripts import ALL as SCRIPTS
from service.store import LIFECYCLE_MAXLEN
from workers.queue import _ENQUEUE, RUN_TURN, QueueNames

APPEND_SCRIPT = next(s.text for s in SCRIPTS if s.name == "append_events")


def create_app() -> FastAPI:
    settings = Settings()
    prefix = settings.key_prefix
    names = QueueNames.of(settings)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(str(settings.redis_url), decode_responses=True)
        state.update(
            redis=redis,
            read_failures=redis.register_script(WINDOW_READ),
            append=redis.register_script(APPEND_SCRIPT),
            enqueue=redis.register_script(_ENQUEUE),
        )
        yield
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)

    async def auth_read(request: Request) -> str:
        """The key check's read; returns the tenant the key names."""
        key = request.headers["authorization"][len("Bearer ") :]
        tenant = key[3:].partition("_")[0]
        address = request.client.host if request.client else "unknown"
        await state["read_failures"](
            keys=[auth_failures_key(prefix, address), K.tenants_key(prefix, "records")],
            args=[tenant],
        )
        return tenant

    @app.get("/readyz")
    async def readyz() -> Response:
        await state["redis"].ping()
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/sessions/{sid}/messages")
    async def send(sid: str, request: Request) -> Response:
        tenant = await auth_read(request)
        prompt = orjson.loads(await request.body())["prompt"]
        body = "Du" + orjson.dumps({"content": prompt}).decode()
        idx = K.index_keys(prefix, tenant, K.index_shard(sid, settings.index_shards))
        live = K.live_key(prefix, tenant, K.live_shard(sid, settings.live_shards))
        res = await state["append"](
            keys=[
                *K.session_keys(prefix, tenant, sid).all(),
                idx.idx,
                idx.exp,
                K.lifecycle_key(prefix, tenant),
                K.pending_key(prefix, tenant),
                live,
            ],
            args=[
                LIFECYCLE_MAXLEN, sid, settings.live_window_events,
                settings.live_window_seconds * 1000, "", "enqueue", "", "messages=1", "",
                settings.max_pending_turns, body,
            ],
        )  # fmt: skip
        message_id = res[3]
        job_id = names.turn_job(tenant, sid, message_id)
        now = timestamp_ms()
        job = serialize_job(RUN_TURN, (tenant, sid, message_id), {}, None, now, serializer=None)
        await state["enqueue"](
            keys=[job_key_prefix + job_id, result_key_prefix + job_id, names.queue, names.wake],
            args=[job_id, now, expires_extra_ms, job],
        )
        return Response(
            orjson.dumps({"message_id": message_id, "duplicate": False}),
            status_code=202,
            media_type="application/json",
        )

    @app.get("/sessions/{sid}/events")
    async def events(sid: str, request: Request) -> Response:
        tenant = await auth_read(request)
        keys = K.session_keys(prefix, tenant, sid)
        pipe = state["redis"].pipeline(transaction=False)
        pipe.hmget(keys.meta, "id", "hbase")
        pipe.exists(keys.events)
        pipe.lrange(keys.history, 0, 999)
        (_, base), _, items = await pipe.execute()
        data = []
        for n, item in enumerate(items, int(base or 0)):
            brace = item.index("{")
            head = item[:brace]
            code = head.lstrip("0123456789")
            ms = head[: len(head) - len(code)]
            kind = {"u": "user.message", "a": "assistant.message"}.get(code, code)
            data.append({"id": f"{ms}-{n}", "type": kind, "data": orjson.loads(item[brace:])})
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
