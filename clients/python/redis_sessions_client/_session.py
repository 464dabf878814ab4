"""``Session``: a handle on one session (send, wait for replies, follow events, history).

A handle holds no conversation state: everything lives in the service, so a handle can be
released (``destroy``/``disconnect``) and another one resumed later, from any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import httpx

from redis_sessions_client import _requests as calls
from redis_sessions_client._errors import (
    SessionError,
    SessionNotFound,
    ValidationError,
    WaitTimeout,
)
from redis_sessions_client._models import (
    Bookmark,
    Event,
    Message,
    SessionInfo,
    answers,
    id_key,
    is_later,
    outcome_in,
    turn_outcome,
)
from redis_sessions_client._requests import Call, body_of
from redis_sessions_client._sse import RESYNC, Delivery
from redis_sessions_client._stream import EventStream

if TYPE_CHECKING:
    from redis_sessions_client._client import SessionClient

log = logging.getLogger("redis_sessions_client")
Handler = Callable[[Event], Any]
KEPT_OUTCOMES = 256  # turn outcomes kept for a waiter that registers after they arrive
# the handle whose listener runs the current handler (the listener waits for it to return)
_HANDLING: ContextVar[Session | None] = ContextVar("handling", default=None)


class Session:
    """One session of the service. Get it from ``SessionClient.create_session`` or
    ``resume_session``."""

    def __init__(self, client: SessionClient, info: SessionInfo) -> None:
        self._client = client
        self.info = info
        self.session_id = info.session_id
        self._path = calls.session_path(info.session_id)
        self._cursor: str | None = info.last_event_id or None
        self._delivery = Delivery(info.last_event_id or None)
        self._handlers: list[tuple[str | None, Handler]] = []
        self._listener: asyncio.Task[None] | None = None
        # send_and_wait: one event stream per handle, opened by the first call and kept until
        # disconnect(), so a turn costs a send and no stream setup. Outcomes that arrive before
        # their waiter registers (the reply can beat the send's own response) are kept briefly.
        self._keep_listening = False
        self._waiters: dict[str, asyncio.Future[Event]] = {}
        self._outcomes: OrderedDict[str, Event] = OrderedDict()
        self._last_abort: Event | None = None

    @property
    def sessionId(self) -> str:  # the TypeScript SDK's name
        return self.session_id

    def __repr__(self) -> str:
        return f"<Session {self.session_id!r}>"

    def _saw(self, position: str) -> None:
        """Move the handle's cursor (where its next listener starts) to ``position`` (a
        stream's ``Last-Event-ID``, or a history id) when that comes later."""
        if self._cursor is None or is_later(position, self._cursor):
            self._cursor = position

    def _info(self, response: httpx.Response) -> SessionInfo:
        self.info = SessionInfo.from_json(body_of(response))
        if self.info.last_event_id and not (self._cursor or "").startswith("L"):
            # (a live position is exact: which of the two comes later only the clock guesses)
            self._saw(self.info.last_event_id)
        return self.info

    # --- turns ---------------------------------------------------------------------------------
    async def send(
        self,
        options: str | Mapping[str, Any] | None = None,
        /,
        *,
        prompt: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Add a user message and queue its turn; returns the message id. Every try of one send
        carries the same ``Idempotency-Key`` (a new one per call unless given), so a retried
        send never makes a second message."""
        text = calls.prompt_of(options, prompt)
        response = await self._client._request(calls.send(self._path, text, idempotency_key))
        message_id: str = body_of(response)["message_id"]
        return message_id

    async def send_and_wait(
        self,
        options: str | Mapping[str, Any] | None = None,
        /,
        *,
        prompt: str | None = None,
        timeout: float | None = 60.0,  # noqa: ASYNC109 - the assistant SDKs' signature
        idempotency_key: str | None = None,
    ) -> Event:
        """Send a message and wait for the ``assistant.message`` event answering it (its
        ``data["content"]`` is the reply). Raises ``WaitTimeout`` (a ``TimeoutError``) after
        ``timeout`` seconds (above 0, or None: no limit; anything else is a ``ValidationError``
        and nothing is sent) and ``TurnError`` when the turn fails (``session.error``) or is
        aborted.

        The send carries ``idempotency_key``, or a new key, which ``WaitTimeout`` names: a
        prompt whose send did not answer in time may be stored and answered all the same, and
        ``send_and_wait`` again with that key stores it at most once and waits for its reply
        (one already stored is found in the history at once).

        The handle follows the session's events from its last seen event, so the reply cannot
        be missed however fast it comes; the stream stays open for the next call. Called from
        one of this handle's ``on()`` handlers (which that stream waits on), it waits over a
        stream of its own. Before it raises ``TimeoutError`` it looks in the history once
        (``_stored_outcome``, 2 s more at most): a reply stored whose live copy never came
        still ends the wait."""
        text = calls.prompt_of(options, prompt)
        timeout = calls.wait_timeout(timeout)
        key = calls.send_key(idempotency_key)
        self._keep_listening = True
        self._ensure_listener()
        message_id = ""
        try:
            async with asyncio.timeout(timeout):
                response = await self._client._request(calls.send(self._path, text, key))
                sent = body_of(response)
                message_id = sent["message_id"]
                if sent.get("duplicate"):  # sent before: its turn may be over already
                    found = await self._stored_outcome(message_id)
                    if found is not None:
                        return turn_outcome(message_id, found)
                if _HANDLING.get() is self:  # from a handler: the listener waits for it
                    return turn_outcome(message_id, await self._wait_alone(message_id))
                return turn_outcome(message_id, await self._wait_for(message_id))
        except TimeoutError:
            found = await self._stored_outcome(message_id) if message_id else None
            if found is None:
                raise WaitTimeout(self.session_id, timeout, key, message_id or None) from None
        finally:
            self._waiters.pop(message_id, None)
        return turn_outcome(message_id, found)

    async def _stored_outcome(self, message_id: str) -> Event | None:
        """The stored event that ended the turn of ``message_id``, if any: a last look, of at
        most ``LAST_LOOK_S``, before a wait reports a timeout (see ``calls.outcome_page``). A
        look that fails finds nothing."""
        try:
            async with asyncio.timeout(calls.LAST_LOOK_S):
                response = await self._client._request(calls.outcome_page(self._path, message_id))
            return outcome_in(body_of(response), message_id)
        except (SessionError, TimeoutError, LookupError, TypeError, ValueError):
            return None

    async def _wait_for(self, message_id: str) -> Event:
        """The event that ends the turn of ``message_id``: its reply, its error, or an abort."""
        done = self._outcomes.pop(message_id, None)
        if done is not None:
            return done
        abort = self._last_abort
        if abort is not None and id_key(abort.id) > id_key(message_id):
            return abort
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters[message_id] = future
        self._ensure_listener()
        return await future

    async def _wait_alone(self, message_id: str) -> Event:
        """``_wait_for`` over a stream of its own, from the message on: for a call made from a
        handler, which the handle's listener waits on and so cannot deliver the answer."""
        stream = EventStream(self._client, self._path, message_id)
        try:
            async with contextlib.aclosing(stream.events()) as events:
                async for event in events:
                    got = [event]
                    if event.type == RESYNC:
                        got = await self.get_events(after=message_id)
                    for ev in got:
                        if answers(ev, message_id):
                            return ev
        finally:
            await stream.aclose()
        raise SessionNotFound(f"session {self.session_id!r} was deleted while waiting")

    def _settle(self, event: Event) -> None:
        """Hand a turn-ending event to whoever waits for it (or keep it for a moment)."""
        if event.type in ("assistant.message", "session.error"):
            reply_to = event.data.get("reply_to")
            if not isinstance(reply_to, str):
                return
            future = self._waiters.pop(reply_to, None)
            if future is not None and not future.done():
                future.set_result(event)
            else:
                self._outcomes[reply_to] = event
                while len(self._outcomes) > KEPT_OUTCOMES:
                    self._outcomes.popitem(last=False)
        elif event.type == "abort":
            self._last_abort = event
            for message_id, future in list(self._waiters.items()):
                if id_key(event.id) > id_key(message_id) and not future.done():
                    future.set_result(event)
                    del self._waiters[message_id]

    def _fail_waiters(self, error: Exception) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()

    async def abort(self) -> bool:
        """Drop the pending turns; True when something was pending."""
        response = await self._client._request(calls.abort(self._path))
        return bool(body_of(response).get("aborted"))

    # --- live events ---------------------------------------------------------------------------
    def on(self, event_type: str | Handler, handler: Handler | None = None) -> Callable[[], None]:
        """Call ``handler(event)`` (sync or async) for every live event, or only for events of
        ``event_type`` with ``on(event_type, handler)``. Returns a function that unsubscribes."""
        if handler is None:
            if not callable(event_type):
                raise TypeError("on(handler) or on(event_type, handler)")
            entry: tuple[str | None, Handler] = (None, event_type)
        else:
            if not isinstance(event_type, str):
                raise TypeError("event_type must be a string")
            entry = (event_type, handler)
        self._handlers.append(entry)
        self._ensure_listener()

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)
            if not self._handlers and not self._keep_listening and self._listener is not None:
                self._listener.cancel()
                self._listener = None

        return unsubscribe

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(self._cursor))

    async def _listen(self, after: str | None) -> None:
        stream = EventStream(self._client, self._path, after)
        ended: Exception = SessionNotFound(f"session {self.session_id!r} was deleted while waiting")
        try:
            async with contextlib.aclosing(stream.events()) as events:
                async for event in events:
                    if event.type == RESYNC:
                        await self._catch_up()
                        continue
                    await self._handle(event, stream.last_id)
        except SessionError as exc:
            log.warning("event listener of session %s stopped: %s", self.session_id, exc)
            ended = exc
        finally:
            await stream.aclose()
            self._fail_waiters(ended)

    async def _handle(self, event: Event, position: str | None = None) -> None:
        """Hand ``event`` on, unless handed on already; ``position``: where it leaves the
        stream (its SSE id: a live copy's is its live position, not the history id), else
        its id."""
        if not self._delivery.fresh(event):
            return
        self._saw(position or event.id)
        self._settle(event)
        await self._dispatch(event)

    async def _catch_up(self) -> None:
        """After ``session.resync`` (the stream could not resume where it left off): hand on
        what the history holds after the newest history event this handle saw."""
        missed = await self.get_events(after=self._delivery.newest)
        self._delivery.catching_up()
        for event in missed:
            await self._handle(event)
        self._delivery.caught_up(missed)

    async def _dispatch(self, event: Event) -> None:
        token = _HANDLING.set(self)
        try:
            await self._run_handlers(event)
        finally:
            _HANDLING.reset(token)

    async def _run_handlers(self, event: Event) -> None:
        for wanted, handler in list(self._handlers):
            if wanted is not None and wanted != event.type:
                continue
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event handler of session %s failed", self.session_id)

    async def disconnect(self) -> None:
        """Release the handle: stop the listeners. The session's data stays."""
        self._handlers.clear()
        self._keep_listening = False
        task, self._listener = self._listener, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})

    async def destroy(self) -> None:
        """Release the handle (as ``disconnect``); resume the session later by its id."""
        await self.disconnect()

    # --- history -------------------------------------------------------------------------------
    async def get_messages(self) -> list[Message]:
        """The whole conversation (user and assistant messages), oldest first."""
        out: list[Message] = []
        after: str | None = None
        while True:
            response = await self._client._request(calls.messages_page(self._path, after))
            body = body_of(response)
            out += Message.list_from_json(body["data"])
            after = body.get("next_cursor")
            if not after:
                return out

    async def get_events(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[Event]:
        """Stored events (oldest first, newest first with ``reverse``), between the exclusive
        ids ``after`` and ``before`` (durable events' ids: a transient event's ``L...`` id is
        refused); all of them unless ``limit`` is given."""
        calls.check_limit(limit)
        out: list[Event] = []
        while True:
            size = calls.PAGE if limit is None else min(calls.PAGE, limit - len(out))
            call = calls.events_page(
                self._path, after=after, before=before, limit=size, reverse=reverse
            )
            data = body_of(await self._client._request(call))["data"]
            out += [Event.from_json(raw) for raw in data]
            if len(data) < size or (limit is not None and len(out) >= limit):
                return out
            if reverse:
                before = data[-1]["id"]
            else:
                after = data[-1]["id"]

    # --- bookmarks -----------------------------------------------------------------------------
    def _bookmark_path(self, name: str) -> str:
        return calls.bookmark_path(self._path, name)

    async def bookmark(self, name: str, description: str = "") -> Bookmark:
        """Mark the current end of the conversation as ``name`` (replacing one of that name)."""
        response = await self._client._request(
            Call("PUT", self._bookmark_path(name), json={"description": description})
        )
        return Bookmark.from_json(body_of(response))

    async def get_bookmarks(self) -> list[Bookmark]:
        response = await self._client._request(Call("GET", self._path + "/bookmarks"))
        return [Bookmark.from_json(b) for b in body_of(response)["data"]]

    async def delete_bookmark(self, name: str) -> None:
        await self._client._request(Call("DELETE", self._bookmark_path(name)))

    async def get_messages_since(self, name: str) -> list[Message]:
        """Every message after bookmark ``name``, oldest first (page by page)."""
        call = Call("GET", self._bookmark_path(name) + "/messages")
        out: list[Message] = []
        while True:
            body = body_of(await self._client._request(call))
            out += Message.list_from_json(body["data"])
            if not body.get("next_cursor"):
                return out
            call = calls.messages_page(self._path, body["next_cursor"])

    # --- export and metadata -------------------------------------------------------------------
    async def export(self, format: str = "json") -> dict[str, Any]:
        """``{"session": {...}, "bookmarks": [...], "events": [...]}``, all in one answer."""
        if format != "json":
            raise ValidationError("export() returns JSON; use export_jsonl() to stream")
        response = await self._client._request(calls.export(self._path, "json"))
        exported: dict[str, Any] = body_of(response)
        return exported

    async def export_jsonl(self) -> AsyncIterator[dict[str, Any]]:
        """The export streamed: ``{"session": {...}}`` first, then one event per item."""
        response = await self._client._request(calls.export(self._path, "jsonl"), stream=True)
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)
        finally:
            await response.aclose()

    async def refresh(self) -> SessionInfo:
        """Fetch the session's metadata again (``self.info``)."""
        return self._info(await self._client._request(Call("GET", self._path)))

    async def update(self, **changes: Any) -> SessionInfo:
        """Change ``name``, ``summary``, ``labels``, ``ttl_seconds`` or ``infinite``."""
        return self._info(await self._client._request(calls.update(self._path, changes)))

    async def set_labels(self, labels: Mapping[str, str]) -> SessionInfo:
        return await self.update(labels=dict(labels))

    async def rename(self, name: str) -> SessionInfo:
        return await self.update(name=name)
