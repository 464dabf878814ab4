"""Hooks for the schemathesis command-line runs of ``test_fuzz_openapi`` (loaded through
``SCHEMATHESIS_HOOKS``): our own check that every 4xx is a problem document, and a reset of the
refused-key counter of this machine's address before each call (schemathesis sends wrong keys on
purpose; after 20 in a minute every request from the address would get 429)."""

from __future__ import annotations

import os
from typing import Any

import redis
import schemathesis

_redis = (
    redis.Redis.from_url(os.environ["FUZZ_REDIS_URL"]) if "FUZZ_REDIS_URL" in os.environ else None
)


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: Any) -> None:
    if _redis is not None:
        _redis.delete(os.environ["FUZZ_FAILURES_KEY"])


@schemathesis.check
def problem_document(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is ``application/problem+json`` with ``title``, ``status`` and ``detail``."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == "application/problem+json", f"4xx with content type {content_type!r}"
    body = response.json()
    assert isinstance(body, dict), "a problem document is an object"
    assert isinstance(body.get("title"), str) and body["title"], "problem without a title"
    assert isinstance(body.get("detail"), str) and body["detail"], "problem without a detail"
    assert body.get("status") == response.status_code, "problem status differs from HTTP status"
    return True
