"""What each call sends: the request building both clients share (the async and the sync one
differ only in how they send it and wait).

A ``Call`` is one HTTP request before it is sent: method, path, body, query, headers, and whether
it may be repeated (see ``_retry``).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from redis_sessions_client._errors import ValidationError, unexpected_answer

_loads: Callable[[bytes], Any]
try:  # optional (the ``fast`` extra, and the adapters' extras): pages parse in half the time
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - the base install
    _loads = json.loads

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = "redis-sessions-client/0.1"
PAGE = 1000  # the service's largest page of sessions, events or messages
LAST_LOOK_S = 2.0  # how long a wait's look in the history before it times out may take
SESSION_PAGE = 100
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

# Option names accepted by create_session (snake_case, and the camelCase of the TypeScript SDK).
CREATE_KEYS = {
    "session_id": "session_id",
    "sessionId": "session_id",
    "model": "model",
    "system_message": "system_message",
    "systemMessage": "system_message",
    "streaming": "streaming",
    "infinite_sessions": "infinite_sessions",
    "infiniteSessions": "infinite_sessions",
    "labels": "labels",
    "ttl_seconds": "ttl_seconds",
    "ttlSeconds": "ttl_seconds",
    "name": "name",
    "mode": "mode",
}
# Options resume_session may change on an existing session, with their PATCH field.
RESUME_KEYS = {
    "name": "name",
    "labels": "labels",
    "ttl_seconds": "ttl_seconds",
    "ttlSeconds": "ttl_seconds",
    "infinite_sessions": "infinite",
    "infiniteSessions": "infinite",
}
UPDATE_FIELDS = frozenset({"name", "summary", "labels", "ttl_seconds", "infinite"})


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    repeatable: bool | None = None  # None: by method

    @property
    def may_repeat(self) -> bool:
        return self.method in REPEATABLE_METHODS if self.repeatable is None else self.repeatable


def build(
    http: httpx.Client | httpx.AsyncClient, call: Call, per_try: float, read_timeout: float | None
) -> httpx.Request:
    """The httpx request of one try of ``call``."""
    return http.build_request(
        call.method,
        call.path,
        json=call.json,
        params=call.params,
        headers=call.headers,
        timeout=httpx.Timeout(per_try, read=read_timeout or per_try),
    )


def base_url_of(base_url: str | None) -> str:
    """``base_url``, else ``SESSIONS_URL``, else the dev server's address."""
    url = base_url or os.environ.get("SESSIONS_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


def api_key_of(api_key: str | None) -> str | None:
    return api_key if api_key is not None else os.environ.get("SESSIONS_API_KEY")


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def options(
    config: Mapping[str, Any] | None, kw: Mapping[str, Any], names: Mapping[str, str], what: str
) -> dict[str, Any]:
    """Merge a config dict and keywords (keywords win) into the service's field names."""
    merged = {**(config or {}), **kw}
    body: dict[str, Any] = {}
    for key, value in merged.items():
        name = names.get(key)
        if name is None:
            allowed = ", ".join(sorted(k for k in names if "_" in k or k.islower()))
            raise ValidationError(f"unknown {what} option {key!r} (known: {allowed})")
        if value is None:
            continue
        if name == "system_message" and isinstance(value, Mapping):
            value = value.get("content", "")  # the assistant SDKs' {"mode", "content"} shape
        body[name] = value
    return body


def session_path(session_id: str) -> str:
    """The URL path of a session. Ids that cannot be a path segment are refused here; any other
    id is sent percent-encoded and judged by the service."""
    if not isinstance(session_id, str) or session_id in ("", ".", "..") or "/" in session_id:
        raise ValidationError(f"invalid session id {session_id!r}")
    return f"/v1/sessions/{quote(session_id, safe='')}"


def bookmark_path(path: str, name: str) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name:
        raise ValidationError(f"invalid bookmark name {name!r}")
    return f"{path}/bookmarks/{quote(name, safe='')}"


def prompt_of(options: str | Mapping[str, Any] | None, prompt: str | None) -> str:
    if prompt is None:
        if isinstance(options, str):
            prompt = options
        elif isinstance(options, Mapping):
            unknown = set(options) - {"prompt"}
            if unknown:
                raise ValidationError(f"unknown message option(s): {', '.join(sorted(unknown))}")
            prompt = options.get("prompt")
    if not isinstance(prompt, str):
        raise ValidationError("a message needs a prompt: send({'prompt': '...'})")
    return prompt


# --- the calls ---------------------------------------------------------------------------------
def create_session(config: Mapping[str, Any] | None, kw: Mapping[str, Any]) -> Call:
    return Call("POST", "/v1/sessions", json=options(config, kw, CREATE_KEYS, "session"))


def resume_session(
    session_id: str, config: Mapping[str, Any] | None, kw: Mapping[str, Any]
) -> Call:
    changes = options(config, kw, RESUME_KEYS, "resume")
    if changes:
        return Call("PATCH", session_path(session_id), json=changes)
    return Call("GET", session_path(session_id))


def check_limit(limit: int | None) -> None:
    """A ``limit`` of a listing or read: None (all) or a whole number from 1."""
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValidationError(
            f"limit must be a whole number from 1, or None for all (got {limit!r})"
        )


def list_page(labels: Mapping[str, str] | None, size: int, cursor: str | None) -> Call:
    params: list[tuple[str, str | int]] = [("limit", max(1, min(size, PAGE)))]
    params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
    if cursor:
        params.append(("cursor", cursor))
    return Call("GET", "/v1/sessions", params=params)


def send_key(idempotency_key: str | None) -> str:
    """The ``Idempotency-Key`` of a send: the caller's (checked), else a new one."""
    if idempotency_key and not (
        isinstance(idempotency_key, str)
        and len(idempotency_key) <= 200
        and idempotency_key.isascii()
        and idempotency_key.isprintable()
    ):
        raise ValidationError("idempotency_key must be 1-200 printable ASCII characters")
    return idempotency_key or uuid.uuid4().hex


def wait_timeout(timeout: object) -> float | None:
    """``send_and_wait``'s timeout: seconds above 0, or None (no limit). Anything else (0, a
    negative, NaN, infinity, a string) would end the wait at once or never: refused before
    anything is sent."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf
    ):
        raise ValidationError(f"timeout must be seconds above 0 (or None), not {timeout!r}")
    return float(timeout)


def send(path: str, text: str, idempotency_key: str | None) -> Call:
    """Every try of one send carries the same ``Idempotency-Key`` (a new one per call unless
    given), so the send is repeatable: a retried send never makes a second message."""
    key = send_key(idempotency_key)
    return Call(
        "POST",
        path + "/messages",
        json={"prompt": text},
        headers={"Idempotency-Key": key},
        repeatable=True,
    )


def abort(path: str) -> Call:
    return Call("POST", path + "/abort", repeatable=True)  # a second abort finds nothing to drop


def messages_page(path: str, after: str | None) -> Call:
    params: dict[str, Any] = {"limit": PAGE}
    if after:
        params["after"] = after
    return Call("GET", path + "/messages", params=params)


def outcome_page(path: str, message_id: str) -> Call:
    """The page a wait reads before it reports a timeout: the events after the message, where
    its answer is stored even when the live copy a stream was waiting for never came (on a
    Redis Cluster, a process that died between writing an answer and publishing its copy)."""
    return events_page(path, after=message_id, before=None, limit=PAGE, reverse=False)


def events_page(
    path: str, *, after: str | None, before: str | None, limit: int, reverse: bool
) -> Call:
    params: dict[str, Any] = {"limit": min(limit, PAGE)}
    if reverse:
        params["reverse"] = "true"
    if after:
        params["after"] = after
    if before:
        params["before"] = before
    return Call("GET", path + "/events", params=params)


def update(path: str, changes: Mapping[str, Any]) -> Call:
    unknown = set(changes) - UPDATE_FIELDS
    if unknown:
        raise ValidationError(f"unknown update field(s): {', '.join(sorted(unknown))}")
    return Call("PATCH", path, json=dict(changes))


def export(path: str, format: str) -> Call:
    return Call("GET", path + "/export", params={"format": format})


def body_of(response: httpx.Response) -> Any:
    """A JSON response body; with orjson installed, a page of 1,000 items parses in half the
    time of ``response.json()`` (the standard library's parser)."""
    try:
        return _loads(response.content)
    except ValueError:
        raise unexpected_answer(
            response, response.content, " and a body that is not JSON", "Not JSON"
        ) from None
