"""LangChain chat message history over the session service (the ``langchain`` extra).

```python
from langchain_core.runnables.history import RunnableWithMessageHistory
from redis_sessions_client.langchain import ServiceChatMessageHistory

chain = RunnableWithMessageHistory(
    prompt | model,
    lambda sid: ServiceChatMessageHistory(sid, base_url="http://sessions:8000", api_key=KEY),
    input_messages_key="input",
    history_messages_key="history",
)
```

Messages are stored as LangChain's own dicts (``message_to_dict``), one item each, in a
storage-only session created on the first write. Sync methods go through a
``SyncSessionClient``, async ones through a ``SessionClient`` (given, or made from the URL and
key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "redis_sessions_client.langchain needs LangChain: "
        "pip install 'redis-sessions-client[langchain]'"
    ) from exc

from redis_sessions_client._client import SessionClient
from redis_sessions_client._items import Items, SyncItems
from redis_sessions_client._sync import SyncSessionClient

__all__ = ["ServiceChatMessageHistory"]


class ServiceChatMessageHistory(BaseChatMessageHistory):
    """A LangChain ``BaseChatMessageHistory`` (sync and async) of one storage-only session.

    Give ``client`` (async) and/or ``sync_client``, or ``base_url`` and ``api_key`` (else
    ``SESSIONS_URL`` and ``SESSIONS_API_KEY``) for the ones not given. ``ttl_seconds``,
    ``infinite`` and ``labels`` apply when the session is created."""

    def __init__(
        self,
        session_id: str,
        *,
        client: SessionClient | None = None,
        sync_client: SyncSessionClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        ttl_seconds: int | None = None,
        infinite: bool = False,
        labels: dict[str, str] | None = None,
    ) -> None:
        create: dict[str, Any] = {"infinite_sessions": infinite}
        if ttl_seconds is not None:
            create["ttl_seconds"] = ttl_seconds
        if labels:
            create["labels"] = labels
        self._owned: list[SessionClient | SyncSessionClient] = []
        if client is None:
            url = base_url or (sync_client.base_url if sync_client else None)
            key = api_key or (sync_client.api_key if sync_client else None)
            client = SessionClient(url, api_key=key)
            self._owned.append(client)
        if sync_client is None:
            sync_client = SyncSessionClient(
                base_url or client.base_url, api_key=api_key or client.api_key
            )
            self._owned.append(sync_client)
        self.session_id = session_id
        self._items = Items(client, session_id, create=create)
        self._sync = SyncItems(sync_client, session_id, create=create)

    # --- sync ----------------------------------------------------------------------------------
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message, oldest first."""
        return messages_from_dict(self._sync.read())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        if messages:
            self._sync.append([message_to_dict(m) for m in messages])

    def clear(self) -> None:
        self._sync.clear()

    # --- async ---------------------------------------------------------------------------------
    async def aget_messages(self) -> list[BaseMessage]:
        return messages_from_dict(await self._items.read())

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if messages:
            await self._items.append([message_to_dict(m) for m in messages])

    async def aclear(self) -> None:
        await self._items.clear()

    async def aclose(self) -> None:
        """Close the clients this history made (ones given by the caller stay open)."""
        for owned in self._owned:
            if isinstance(owned, SessionClient):
                await owned.stop()
            else:
                owned.stop()
