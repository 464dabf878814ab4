"""The title job on a real Redis (single server and Cluster): it never overwrites a summary the
user set while the model answered, and every incarnation of a session id gets its own title."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from service.models import NewEvent
from service.runtime import Runtime
from tests.workers.conftest import WorkerFactory, send, wait_idle
from workers.background import set_title
from workers.providers import ChatMessage, Completion
from workers.providers.dev import DevProvider
from workers.queue import TurnQueue


class UserRenamesMeanwhile(DevProvider):
    """The dev model, during whose answer the user sets the session's summary."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    async def complete(self, messages: Sequence[ChatMessage], **kw: Any) -> Completion:
        await self.runtime.store.tenant("acme").update("s", summary="Mine")
        return await super().complete(messages, **kw)


async def test_a_summary_set_while_the_title_is_made_is_kept(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await store.create("s", model="dev-echo")
    await start_worker()
    await send(store, queue, "s", "Plan the garden")
    await wait_idle(store, "s")
    assert await titled(runtime, "s") == "Plan the garden"  # the turn's own title job is done
    await store.update("s", summary="")
    ctx = {"runtime": runtime, "provider": UserRenamesMeanwhile(runtime)}
    assert await set_title(ctx, "acme", "s") == "has a title"
    assert (await store.get("s")).summary == "Mine"


async def titled(runtime: Runtime, session_id: str) -> str:
    store = runtime.store.tenant("acme")
    for _ in range(250):
        summary = (await store.get(session_id)).summary
        if summary:
            return summary
        await asyncio.sleep(0.02)
    raise AssertionError(f"{session_id} got no title")


async def test_a_session_re_created_under_its_id_gets_a_title(
    runtime: Runtime, queue: TurnQueue, start_worker: WorkerFactory
) -> None:
    store = runtime.store.tenant("acme")
    await start_worker()
    await store.create("s", model="dev-echo")
    await send(store, queue, "s", "First life")
    await wait_idle(store, "s")
    assert await titled(runtime, "s") == "First life"
    await store.delete("s")
    await asyncio.sleep(0.01)  # a new creation time, to the ms
    await store.create("s", model="dev-echo")
    await send(store, queue, "s", "Second life")
    await wait_idle(store, "s")
    assert await titled(runtime, "s") == "Second life"


async def test_a_title_job_of_an_earlier_incarnation_does_nothing(runtime: Runtime) -> None:
    store = runtime.store.tenant("acme")
    await store.create("s", model="dev-echo")
    ctx = {"runtime": runtime, "provider": DevProvider()}
    assert await set_title(ctx, "acme", "s", incarnation="1") == "session gone"
    assert await set_title(ctx, "acme", "s", incarnation=1) == "session gone"  # an older job's
    assert (await store.get("s")).summary == ""


async def test_a_session_re_created_within_the_same_millisecond_gets_its_own_title(
    runtime: Runtime,
) -> None:
    """The title job names the incarnation by its microsecond: a job of the session deleted and
    made again within one millisecond (its ``created`` the same) leaves the new one alone."""
    store = runtime.store.tenant("acme")
    await store.create("s", model="dev-echo")
    first = str(await store.get_meta_field("s", "inc"))
    created = str(await store.get_meta_field("s", "created"))
    await store.delete("s")
    await store.create("s", model="dev-echo")
    await runtime.redis.hset(store._session_keys("s").meta, "created", created)  # same ms
    await store.append("s", [NewEvent(type="user.message", data={"content": "Second life"})])
    ctx = {"runtime": runtime, "provider": DevProvider()}
    assert await set_title(ctx, "acme", "s", incarnation=first) == "session gone"
    assert (await store.get("s")).summary == ""
    now = str(await store.get_meta_field("s", "inc"))
    assert await set_title(ctx, "acme", "s", incarnation=now) not in ("session gone", "has a title")
    assert (await store.get("s")).summary
    # a job of an earlier version names the session by its created ms
    await store.update("s", summary="")
    assert await set_title(ctx, "acme", "s", incarnation=int(created)) != "session gone"
