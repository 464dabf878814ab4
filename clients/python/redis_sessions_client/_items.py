"""Items of storage-only sessions over HTTP: what the framework adapters (``agents``,
``langchain``) are built on. A session is created (``mode: store``) on first write; reading one
that does not exist yet is an empty history. ``Items`` and ``SyncItems`` make the same calls
(built here once) through ``SessionClient`` and ``SyncSessionClient``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from redis_sessions_client._errors import SessionError, SessionNotFound
from redis_sessions_client._requests import Call, body_of, session_path

if TYPE_CHECKING:
    import httpx

    from redis_sessions_client._client import SessionClient
    from redis_sessions_client._sync import SyncSessionClient

PAGE = 10_000  # the service's largest page of items
BATCH = 1_000  # the service's largest append


def _append(path: str, batch: list[Mapping[str, Any]]) -> Call:
    """One batch; every try of it carries the same Idempotency-Key, so it is repeatable."""
    return Call(
        "POST",
        path + "/items",
        json={"items": batch},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        repeatable=True,
    )


def _read(path: str, size: int, before: str | None) -> Call:
    params: dict[str, Any] = {"limit": size}
    if before is not None:
        params["before"] = before
    return Call("GET", path + "/items", params=params)


def _create(session_id: str, create: Mapping[str, Any] | None) -> Call:
    body = {**(create or {}), "session_id": session_id, "mode": "store"}
    return Call("POST", "/v1/sessions", json=body, repeatable=True)


class _Pages:
    """Reading the newest ``limit`` items (all when None) page by page, newest page first."""

    def __init__(self, path: str, limit: int | None) -> None:
        self.path, self.wanted = path, limit
        self.pages: list[list[Any]] = []
        self.call: Call | None = None if limit is not None and limit <= 0 else self._next(None)

    def _next(self, before: str | None) -> Call:
        size = PAGE if self.wanted is None else min(self.wanted, PAGE)
        return _read(self.path, size, before)

    def take(self, page: Mapping[str, Any]) -> None:
        assert self.call is not None
        self.pages.append(page["data"])
        got, size = len(page["data"]), self.call.params["limit"]
        if self.wanted is not None:
            self.wanted -= got
        done = got < size or (self.wanted is not None and self.wanted <= 0)
        self.call = None if done else self._next(page["ids"][0])

    def items(self) -> list[Any]:
        if len(self.pages) == 1:
            return self.pages[0]
        return [item for page in reversed(self.pages) for item in page]


def _ignore_missing(send: Callable[[], httpx.Response]) -> httpx.Response | None:
    try:
        return send()
    except SessionNotFound:
        return None


class Items:
    """Append, read, pop and clear the items of one storage-only session (async)."""

    def __init__(
        self,
        client: SessionClient,
        session_id: str,
        *,
        create: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self.session_id = session_id
        self._path = session_path(session_id)
        self._create = _create(session_id, create)

    async def append(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        """Append ``items`` in order (creating the session when needed); each batch of up to
        1,000 is atomic and stored once however often it is retried."""
        ids: list[str] = []
        for start in range(0, len(items), BATCH):
            call = _append(self._path, list(items[start : start + BATCH]))
            try:
                response = await self._client._request(call)
            except SessionNotFound:  # not made yet, or deleted or expired since
                await self._ensure()
                response = await self._client._request(call)
            ids += body_of(response)["ids"]
        return ids

    async def read(self, limit: int | None = None) -> list[Any]:
        """The newest ``limit`` items (all when None), oldest first."""
        pages = _Pages(self._path, limit)
        while pages.call is not None:
            try:
                response = await self._client._request(pages.call)
            except SessionNotFound:
                return []
            pages.take(body_of(response))
        return pages.items()

    async def pop(self) -> Any | None:
        """Remove the newest item and return it; None when there is none."""
        try:
            response = await self._client._request(Call("POST", self._path + "/items/pop"))
        except SessionNotFound:
            return None
        return body_of(response)["item"]

    async def clear(self) -> None:
        """Drop every item; the session, its TTL and labels stay."""
        with contextlib.suppress(SessionNotFound):
            await self._client._request(Call("DELETE", self._path + "/items"))

    async def _ensure(self) -> None:
        try:
            await self._client._request(self._create)
        except SessionError as exc:
            if exc.status_code != 409:  # made meanwhile by another writer: fine
                raise


class SyncItems:
    """The same calls, blocking, through a ``SyncSessionClient``."""

    def __init__(
        self,
        client: SyncSessionClient,
        session_id: str,
        *,
        create: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self.session_id = session_id
        self._path = session_path(session_id)
        self._create = _create(session_id, create)

    def append(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(items), BATCH):
            call = _append(self._path, list(items[start : start + BATCH]))
            try:
                response = self._client._request(call)
            except SessionNotFound:
                self._ensure()
                response = self._client._request(call)
            ids += body_of(response)["ids"]
        return ids

    def read(self, limit: int | None = None) -> list[Any]:
        pages = _Pages(self._path, limit)
        while (call := pages.call) is not None:
            response = _ignore_missing(partial(self._client._request, call))
            if response is None:
                return []
            pages.take(body_of(response))
        return pages.items()

    def pop(self) -> Any | None:
        call = Call("POST", self._path + "/items/pop")
        response = _ignore_missing(partial(self._client._request, call))
        return None if response is None else body_of(response)["item"]

    def clear(self) -> None:
        _ignore_missing(partial(self._client._request, Call("DELETE", self._path + "/items")))

    def _ensure(self) -> None:
        try:
            self._client._request(self._create)
        except SessionError as exc:
            if exc.status_code != 409:  # made meanwhile by another writer: fine
                raise
