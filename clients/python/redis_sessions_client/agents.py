"""OpenAI Agents SDK ``Session`` over the session service (the ``agents`` extra).

```python
from agents import Agent, Runner
from redis_sessions_client import SessionClient
from redis_sessions_client.agents import ServiceSession

async with SessionClient("http://sessions:8000", api_key=KEY) as client:
    session = ServiceSession("user-42-main", client)
    result = await Runner.run(agent, "What's the weather in Paris?", session=session)
```

Items (messages, function calls, tool outputs, reasoning items) are stored unchanged in a
storage-only session, created on the first write; the service never runs a turn for it. Every
change is one atomic script in Redis, so any number of processes and API replicas can share a
session: concurrent writers get one order, with no retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from agents.memory.session_settings import SessionSettings, resolve_session_limit
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "redis_sessions_client.agents needs the OpenAI Agents SDK: "
        "pip install 'redis-sessions-client[agents]'"
    ) from exc

from redis_sessions_client._items import Items

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

    from redis_sessions_client._client import SessionClient

__all__ = ["ServiceSession"]


class ServiceSession:
    """An Agents SDK session (``get_items``, ``add_items``, ``pop_item``, ``clear_session``)
    stored in the session service. ``ttl_seconds``, ``infinite`` and ``labels`` apply when the
    session is created; ``session_settings.limit`` is the default of ``get_items``."""

    def __init__(
        self,
        session_id: str,
        client: SessionClient,
        *,
        ttl_seconds: int | None = None,
        infinite: bool = False,
        labels: dict[str, str] | None = None,
        session_settings: SessionSettings | None = None,
    ) -> None:
        create: dict[str, Any] = {"infinite_sessions": infinite}
        if ttl_seconds is not None:
            create["ttl_seconds"] = ttl_seconds
        if labels:
            create["labels"] = labels
        self.session_id = session_id
        self.session_settings = session_settings or SessionSettings()
        self._items = Items(client, session_id, create=create)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The newest ``limit`` items (else ``session_settings.limit``; all when both are
        None), oldest first."""
        items: list[TResponseInputItem] = await self._items.read(
            resolve_session_limit(limit, self.session_settings)
        )
        return items

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in order, atomically per batch of 1,000."""
        if items:
            await self._items.append(items)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item; None when the session is empty."""
        item: TResponseInputItem | None = await self._items.pop()
        return item

    async def clear_session(self) -> None:
        """Drop every item; the session keeps its id, TTL and labels."""
        await self._items.clear()
