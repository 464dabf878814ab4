"""``SyncSession``: a blocking handle on one session, with the calls of ``Session``.

``send_and_wait`` follows the session's events from the message it sent (events are kept in the
service for a reconnect window, so the reply is found however fast it came). ``on`` handlers run
on one background thread per handle, started by the first ``on`` and stopped by ``disconnect``
(or when the last handler unsubscribes).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from redis_sessions_client import _requests as calls
from redis_sessions_client._errors import (
    ServerError,
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
    is_later,
    outcome_in,
    turn_outcome,
)
from redis_sessions_client._requests import Call, body_of
from redis_sessions_client._sse import ENDING_TYPES, RESYNC, Delivery
from redis_sessions_client._stream import SyncEventStream

if TYPE_CHECKING:
    from redis_sessions_client._sync import SyncSessionClient

log = logging.getLogger("redis_sessions_client")
Handler = Callable[[Event], Any]
JOIN_S = 1.0  # how long disconnect() waits for the listener thread
CLOCK_SLACK_S = 0.05  # a timeout that fires this much before its deadline ends it all the same


class SyncSession:
    """One session of the service, for blocking code. Get it from
    ``SyncSessionClient.create_session`` or ``resume_session``."""

    def __init__(self, client: SyncSessionClient, info: SessionInfo) -> None:
        self._client = client
        self.info = info
        self.session_id = info.session_id
        self._path = calls.session_path(info.session_id)
        self._cursor: str | None = info.last_event_id or None
        self._delivery = Delivery(info.last_event_id or None)  # under _lock
        self._handlers: list[tuple[str | None, Handler]] = []
        self._lock = threading.Lock()
        self._listener: tuple[threading.Thread, SyncEventStream] | None = None

    @property
    def sessionId(self) -> str:  # the TypeScript SDK's name
        return self.session_id

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener[0].is_alive()

    def __repr__(self) -> str:
        return f"<SyncSession {self.session_id!r}>"

    def _saw(self, position: str) -> None:
        """See ``Session._saw``."""
        with self._lock:
            if self._cursor is None or is_later(position, self._cursor):
                self._cursor = position

    def _info(self, response: httpx.Response) -> SessionInfo:
        self.info = SessionInfo.from_json(body_of(response))
        if self.info.last_event_id and not (self._cursor or "").startswith("L"):
            # (a live position is exact: which of the two comes later only the clock guesses)
            self._saw(self.info.last_event_id)
        return self.info

    # --- turns ---------------------------------------------------------------------------------
    def send(
        self,
        options: str | Mapping[str, Any] | None = None,
        /,
        *,
        prompt: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """See ``Session.send``."""
        text = calls.prompt_of(options, prompt)
        response = self._client._request(calls.send(self._path, text, idempotency_key))
        message_id: str = body_of(response)["message_id"]
        return message_id

    def send_and_wait(
        self,
        options: str | Mapping[str, Any] | None = None,
        /,
        *,
        prompt: str | None = None,
        timeout: float | None = 60.0,
        idempotency_key: str | None = None,
    ) -> Event:
        """See ``Session.send_and_wait``. The stream starts at the message, so a reply stored
        before it (a send repeated with its key) comes from the history at once."""
        text = calls.prompt_of(options, prompt)
        timeout = calls.wait_timeout(timeout)
        key = calls.send_key(idempotency_key)
        until = None if timeout is None else time.monotonic() + timeout
        try:
            response = self._client._request(calls.send(self._path, text, key), within=timeout)
        except ServerError as exc:
            # the wait's time ran out in the send, whose answer (its message id) never came
            cut = until is not None and time.monotonic() >= until - CLOCK_SLACK_S
            if cut and isinstance(exc.__cause__, httpx.TimeoutException):
                raise WaitTimeout(self.session_id, timeout, key, None) from None
            raise
        message_id: str = body_of(response)["message_id"]
        stream = SyncEventStream(self._client, self._path, message_id, until=until)
        try:
            for event in stream.events():
                # after a resync (the stream could not resume where it dropped) the answer may
                # be in the gap: the history after the message holds it
                got = self.get_events(after=message_id) if event.type == RESYNC else [event]
                for each in got:
                    self._saw(each.id if event.type == RESYNC else stream.last_id or each.id)
                    if answers(each, message_id):
                        return turn_outcome(message_id, each)
                if event.type in ENDING_TYPES:
                    break
        except TimeoutError:
            found = self._stored_outcome(message_id)
            if found is None:
                raise WaitTimeout(self.session_id, timeout, key, message_id) from None
            return turn_outcome(message_id, found)
        finally:
            stream.close()
        raise SessionNotFound(f"session {self.session_id!r} was deleted while waiting")

    def _stored_outcome(self, message_id: str) -> Event | None:
        """See ``Session._stored_outcome``."""
        call = calls.outcome_page(self._path, message_id)
        try:
            response = self._client._request(call, within=calls.LAST_LOOK_S)
            return outcome_in(body_of(response), message_id)
        except (SessionError, LookupError, TypeError, ValueError):
            return None

    def abort(self) -> bool:
        """Drop the pending turns; True when something was pending."""
        return bool(body_of(self._client._request(calls.abort(self._path))).get("aborted"))

    # --- live events ---------------------------------------------------------------------------
    def on(self, event_type: str | Handler, handler: Handler | None = None) -> Callable[[], None]:
        """See ``Session.on``; handlers are called on the handle's listener thread."""
        if handler is None:
            if not callable(event_type):
                raise TypeError("on(handler) or on(event_type, handler)")
            entry: tuple[str | None, Handler] = (None, event_type)
        else:
            if not isinstance(event_type, str):
                raise TypeError("event_type must be a string")
            entry = (event_type, handler)
        with self._lock:
            self._handlers.append(entry)
        self._ensure_listener()

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._handlers:
                    self._handlers.remove(entry)
                last = not self._handlers
            if last:
                self.disconnect()

        return unsubscribe

    def _ensure_listener(self) -> None:
        if self.listening:
            return
        stream = SyncEventStream(self._client, self._path, self._cursor)
        thread = threading.Thread(
            target=self._listen, args=(stream,), name=f"sessions-{self.session_id}", daemon=True
        )
        self._listener = (thread, stream)
        thread.start()

    def _listen(self, stream: SyncEventStream) -> None:
        try:
            for event in stream.events():
                if event.type == RESYNC:
                    # the stream could not resume where it left off: hand on what the history
                    # holds after the newest history event this handle saw (the newest of them
                    # may come through the resumed stream too)
                    with self._lock:
                        after = self._delivery.newest
                    missed = self.get_events(after=after)
                    with self._lock:
                        self._delivery.catching_up()
                    for earlier in missed:
                        if stream.closed:  # disconnect() meanwhile: hand on nothing more
                            return
                        self._handle(earlier)
                    with self._lock:
                        self._delivery.caught_up(missed)
                    continue
                if stream.closed:  # disconnect() meanwhile: a later listener hands on the rest
                    return
                self._handle(event, stream.last_id)
        except SessionError as exc:
            log.warning("event listener of session %s stopped: %s", self.session_id, exc)
        except Exception:
            if not stream.closed:  # closing from another thread may fail the read in any way
                log.exception("event listener of session %s failed", self.session_id)

    def _handle(self, event: Event, position: str | None = None) -> None:
        """See ``Session._handle``."""
        with self._lock:
            if not self._delivery.fresh(event):
                return
            handlers = list(self._handlers)
        self._saw(position or event.id)
        for wanted, handler in handlers:
            if wanted is None or wanted == event.type:
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler of session %s failed", self.session_id)

    def disconnect(self) -> None:
        """Release the handle: stop the listener thread. The session's data stays."""
        with self._lock:
            self._handlers.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            thread, stream = listener
            stream.close()
            if thread is not threading.current_thread():
                thread.join(JOIN_S)

    def destroy(self) -> None:
        """Release the handle (as ``disconnect``); resume the session later by its id."""
        self.disconnect()

    # --- history -------------------------------------------------------------------------------
    def get_messages(self) -> list[Message]:
        """The whole conversation (user and assistant messages), oldest first."""
        out: list[Message] = []
        after: str | None = None
        while True:
            body = body_of(self._client._request(calls.messages_page(self._path, after)))
            out += Message.list_from_json(body["data"])
            after = body.get("next_cursor")
            if not after:
                return out

    def get_events(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[Event]:
        """See ``Session.get_events``."""
        calls.check_limit(limit)
        out: list[Event] = []
        while True:
            size = calls.PAGE if limit is None else min(calls.PAGE, limit - len(out))
            call = calls.events_page(
                self._path, after=after, before=before, limit=size, reverse=reverse
            )
            data = body_of(self._client._request(call))["data"]
            out += [Event.from_json(raw) for raw in data]
            if len(data) < size or (limit is not None and len(out) >= limit):
                return out
            if reverse:
                before = data[-1]["id"]
            else:
                after = data[-1]["id"]

    # --- bookmarks -----------------------------------------------------------------------------
    def bookmark(self, name: str, description: str = "") -> Bookmark:
        """Mark the current end of the conversation as ``name`` (replacing one of that name)."""
        path = calls.bookmark_path(self._path, name)
        response = self._client._request(Call("PUT", path, json={"description": description}))
        return Bookmark.from_json(body_of(response))

    def get_bookmarks(self) -> list[Bookmark]:
        response = self._client._request(Call("GET", self._path + "/bookmarks"))
        return [Bookmark.from_json(b) for b in body_of(response)["data"]]

    def delete_bookmark(self, name: str) -> None:
        self._client._request(Call("DELETE", calls.bookmark_path(self._path, name)))

    def get_messages_since(self, name: str) -> list[Message]:
        """See ``Session.get_messages_since``."""
        call = Call("GET", calls.bookmark_path(self._path, name) + "/messages")
        out: list[Message] = []
        while True:
            body = body_of(self._client._request(call))
            out += Message.list_from_json(body["data"])
            if not body.get("next_cursor"):
                return out
            call = calls.messages_page(self._path, body["next_cursor"])

    # --- export and metadata -------------------------------------------------------------------
    def export(self, format: str = "json") -> dict[str, Any]:
        """See ``Session.export``."""
        if format != "json":
            raise ValidationError("export() returns JSON; use export_jsonl() to stream")
        exported: dict[str, Any] = body_of(self._client._request(calls.export(self._path, "json")))
        return exported

    def export_jsonl(self) -> Iterator[dict[str, Any]]:
        """The export streamed: ``{"session": {...}}`` first, then one event per item."""
        response = self._client._request(calls.export(self._path, "jsonl"), stream=True)
        try:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)
        finally:
            response.close()

    def refresh(self) -> SessionInfo:
        return self._info(self._client._request(Call("GET", self._path)))

    def update(self, **changes: Any) -> SessionInfo:
        """Change ``name``, ``summary``, ``labels``, ``ttl_seconds`` or ``infinite``."""
        return self._info(self._client._request(calls.update(self._path, changes)))

    def set_labels(self, labels: Mapping[str, str]) -> SessionInfo:
        return self.update(labels=dict(labels))

    def rename(self, name: str) -> SessionInfo:
        return self.update(name=name)
