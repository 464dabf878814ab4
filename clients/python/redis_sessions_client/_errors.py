"""The client's exception tree, and the one function that maps HTTP responses onto it.

    SessionError                 base of every error the client raises on purpose
    ├── SessionNotFound          404 for a session (also a ``RuntimeError``)
    ├── ValidationError          400/413/415/422 (also a ``ValueError``)
    ├── AuthenticationError      401/403: missing, unknown or insufficient API key
    ├── RateLimited              429 after the retries ran out (``retry_after`` seconds)
    ├── ServerError              5xx, or unreachable, after the retries or the deadline ran out
    ├── ProtocolError            an answer the session API never sends (e.g. an HTML page where
    │                            an event stream belongs: a proxy or a wrong base URL)
    └── TurnError                a ``session.error`` event or an abort ended the awaited turn

Other statuses (409 duplicate session id, 404 of a bookmark) raise ``SessionError`` itself. Every
error carries ``status_code`` (``None`` when no response was involved), ``title``, ``detail`` and
the parsed ``problem`` body.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from redis_sessions_client._retry import Attempts, retry_after_seconds

if TYPE_CHECKING:
    from redis_sessions_client._models import Event


class SessionError(Exception):
    """Base of every error the client raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        title: str = "",
        detail: str = "",
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.detail = detail or message
        self.problem: dict[str, Any] = problem or {}


class SessionNotFound(SessionError, RuntimeError):
    """The session does not exist (never created, deleted, or expired)."""


class ValidationError(SessionError, ValueError):
    """The service refused a value: a bad session id, an unknown field, a body too large."""


class AuthenticationError(SessionError):
    """The API key is missing, unknown, disabled, or may not call this endpoint."""


class RateLimited(SessionError):
    """The tenant's request rate or session quota is exhausted."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(SessionError):
    """The service failed (5xx) or could not be reached (``status_code`` None) through every
    retry."""


class ProtocolError(SessionError):
    """The answer is not one the session API gives: a success with the wrong content type (an
    HTML page from a proxy or a login wall), or a body that is not the JSON it should be."""


class TurnError(SessionError):
    """The awaited turn ended without a reply: ``event`` is its ``session.error`` or ``abort``."""

    def __init__(self, message: str, *, event: Event) -> None:
        super().__init__(message)
        self.event = event


class WaitTimeout(TimeoutError):
    """``send_and_wait`` saw no reply in time. ``idempotency_key`` is the key its send carried;
    ``message_id`` the message's id, or None when the send itself did not answer in time: its
    prompt may be stored (and answered) all the same. ``send_and_wait`` again with that
    ``idempotency_key`` stores the prompt at most once and waits for its reply."""

    def __init__(
        self, session_id: str, timeout: float | None, idempotency_key: str, message_id: str | None
    ) -> None:
        again = f"send_and_wait again with idempotency_key={idempotency_key!r}"
        if message_id is not None:
            text = (
                f"no reply in session {session_id!r} to message {message_id} within "
                f"{timeout} s ({again} waits for it)"
            )
        else:
            text = (
                f"no reply in session {session_id!r} within {timeout} s, and no answer to the "
                f"send: its prompt may have been stored (and be answered); {again} stores it "
                "at most once and waits for its reply"
            )
        super().__init__(text)
        self.idempotency_key = idempotency_key
        self.message_id = message_id


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


QUOTAS = frozenset({"sessions", "bookmarks"})  # the 429s a retry within seconds cannot help


def is_quota(response: httpx.Response) -> bool:
    """A 429 for a full quota (the tenant's sessions, a session's bookmarks), not for a rate:
    it lasts until something is deleted."""
    return response.status_code == 429 and _problem(response).get("limit") in QUOTAS


def _names_other_resource(problem: dict[str, Any]) -> bool:
    """A 404 about a bookmark or tenant, not about the session itself."""
    text = f"{problem.get('type', '')} {problem.get('title', '')}".lower()
    return "bookmark" in text or "tenant" in text


def answered_by(response: httpx.Response) -> str:
    """The URL that gave ``response`` (the lean path's answers carry no request)."""
    try:
        return str(response.request.url)
    except RuntimeError:
        return "the session service"


def unexpected_answer(
    response: httpx.Response, head: bytes, what: str, title: str
) -> ProtocolError:
    """The error for a success the API never gives (``what`` says how, ``head`` is its body's
    start): a misrouted proxy or a login page answers with HTML, and trying again would not
    change that."""
    content_type = response.headers.get("content-type", "")
    preview = head[:120].decode("utf-8", "replace").strip()
    return ProtocolError(
        f"{answered_by(response)} answered {response.status_code} with Content-Type "
        f"{content_type or '(none)'!r}{what}: is the base URL the session service's, and does "
        f"no proxy rewrite it? (body starts: {preview!r})",
        status_code=response.status_code,
        title=title,
    )


def error_from_response(response: httpx.Response) -> SessionError:
    """The client error for a 3xx, 4xx or 5xx ``response`` (whose body has been read)."""
    status = response.status_code
    problem = _problem(response)
    title = str(problem.get("title") or response.reason_phrase or "HTTP error")
    detail = str(problem.get("detail") or response.text[:500] or title)
    message = f"{status} {title}: {detail}"
    kw: dict[str, Any] = {
        "status_code": status,
        "title": title,
        "detail": detail,
        "problem": problem,
    }
    if status < 400:  # the service never redirects: a proxy or login wall in the way
        where = response.headers.get("location", "")
        return ProtocolError(
            f"{answered_by(response)} answered {status}{f' to {where}' if where else ''}: is the "
            "base URL the session service's, and does no proxy redirect it?",
            **kw,
        )
    if status == 404 and not _names_other_resource(problem):
        return SessionNotFound(message, **kw)
    if status in (400, 413, 415, 422):
        return ValidationError(message, **kw)
    if status in (401, 403):
        return AuthenticationError(message, **kw)
    if status == 429:
        return RateLimited(message, retry_after=retry_after_seconds(response.headers), **kw)
    if status >= 500:
        return ServerError(message, **kw)
    return SessionError(message, **kw)


class Tries(Attempts):
    """The tries of one call (see ``Attempts``) and how each failure ends: in a wait before
    the next try, or in the call's error."""

    def __init__(
        self, *, repeatable: bool, max_retries: int, deadline: float | None, base_url: str
    ) -> None:
        super().__init__(repeatable=repeatable, max_retries=max_retries, deadline=deadline)
        self._base_url = base_url
        self._answered: httpx.Response | None = None  # the error answer being retried

    def after_failure(self, exc: httpx.TransportError) -> float:
        """The wait before the next try after ``exc``; else raises the call's error: the
        answer the try retried, when the deadline cut it short (``cut_short``), else
        unreachable."""
        wait = self.after_error(exc)
        if wait is None:
            if self._answered is not None and self.cut_short(exc):
                raise error_from_response(self._answered) from exc
            raise ServerError(
                f"cannot reach the session service at {self._base_url}: {exc!r}"
            ) from exc
        self._answered = None  # that answer is no longer the service's last
        return wait

    def after_answer(self, response: httpx.Response) -> float:
        """The wait before the next try after an error ``response`` (its body read); else
        raises its error."""
        wait = self.after_status(response.status_code, response.headers)
        if wait is None or is_quota(response):
            raise error_from_response(response)
        self._answered = response
        return wait
