"""Pure pieces of the API, without Redis: limits maths, problem mapping, SSE framing, parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.api.limits import (
    auth_failures_key,
    client_address,
    retry_after_seconds,
    window_for,
)
from service.api.middleware import request_id_from
from service.api.problems import from_service_error, problem_type
from service.api.routes.sessions import parse_labels
from service.api.sse import KEEPALIVE, frame
from service.errors import (
    InvalidInput,
    LimitExceeded,
    PayloadTooLarge,
    ProviderError,
    SessionNotFound,
    StoreFull,
    StoreUnavailable,
    Unauthorized,
)
from service.metrics import Metrics, method_label, status_class


@given(st.floats(min_value=0.001, max_value=1e6, allow_nan=False))
def test_window_never_allows_more_than_the_rate(rate: float) -> None:
    limit, window_ms = window_for(rate)
    assert limit >= 1 and window_ms >= 1000
    effective = limit * 1000 / window_ms
    assert effective <= rate * (1 + 1e-9)
    assert effective >= rate / 2


def test_window_examples() -> None:
    assert window_for(0) == (0, 0)
    assert window_for(50) == (50, 1000)
    assert window_for(2.5) == (2, 1000)
    assert window_for(0.5) == (1, 2000)
    assert window_for(0.3) == (1, 3334)


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_seconds(0) == 1
    assert retry_after_seconds(1) == 1
    assert retry_after_seconds(1000) == 1
    assert retry_after_seconds(1001) == 2
    assert retry_after_seconds(59_000) == 59


def test_client_address_and_key() -> None:
    assert client_address("127.0.0.1") == "127.0.0.1"
    assert client_address("::1") == "::1"
    for bad in (None, "", "a b", "x" * 46, "host.example*", "{tag}"):
        assert client_address(bad) == "unknown"
    assert auth_failures_key("sess", "10.0.0.1") == "sess:_tenants:{admin}:failures:10.0.0.1"
    assert auth_failures_key("sess", "*") == "sess:_tenants:{admin}:failures:unknown"


@pytest.mark.parametrize(
    ("exc", "status", "slug"),
    [
        (InvalidInput("bad"), 422, "invalid-input"),
        (PayloadTooLarge("big", limit=10), 413, "payload-too-large"),
        (SessionNotFound("gone", session_id="s"), 404, "session-not-found"),
        (Unauthorized("who"), 401, "unauthorized"),
        (LimitExceeded("slow down", retry_after=2.2), 429, "limit-exceeded"),
        (StoreUnavailable("down"), 503, "store-unavailable"),
        (StoreFull("full"), 507, "store-full"),
        (ProviderError("model failed"), 502, "provider-error"),
    ],
)
def test_service_errors_map_to_problems(exc: Exception, status: int, slug: str) -> None:
    response = from_service_error(exc)  # type: ignore[arg-type]
    body = json.loads(response.body)
    assert response.status_code == status == body["status"]
    assert response.media_type == "application/problem+json"
    assert body["type"] == f"/problems/{slug}" == problem_type(exc)  # type: ignore[arg-type]
    assert body["detail"] == str(exc) and body["title"]
    if status == 429:
        assert response.headers["Retry-After"] == "3"
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_problem_extras_cannot_override_the_core_fields() -> None:
    exc = SessionNotFound("gone", status=200, type="x", title="t", session_id="s", obj=object())
    body = json.loads(from_service_error(exc).body)
    assert body["status"] == 404 and body["type"] == "/problems/session-not-found"
    assert body["session_id"] == "s" and "obj" not in body


def test_sse_frames() -> None:
    assert (
        frame("user.message", '{"a":1}', "1-0")
        == b'id: 1-0\nevent: user.message\ndata: {"a":1}\n\n'
    )
    assert frame("session.deleted", "{}") == b"event: session.deleted\ndata: {}\n\n"
    assert KEEPALIVE == b": keepalive\n\n"


def test_parse_labels() -> None:
    assert parse_labels(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in (["novalue"], ["=v"]):
        with pytest.raises(InvalidInput):
            parse_labels(bad)


def test_request_ids() -> None:
    assert request_id_from("abc-123") == "abc-123"
    for bad in (None, "", "a b", "x" * 129, "ü"):
        generated = request_id_from(bad)
        assert len(generated) == 32 and generated != bad


def test_metric_labels_are_bounded() -> None:
    assert method_label("GET") == "GET" and method_label("BREW") == "OTHER"
    assert [status_class(s) for s in (200, 404, 503, 99, 600)] == [
        "2xx",
        "4xx",
        "5xx",
        "other",
        "other",
    ]
    first, second = Metrics(), Metrics()  # one registry each: no duplicate registration
    first.observe_request("GET", "/livez", 200, 0.01)
    assert b"sessions_http_requests_total" in first.render()[0]
    assert b'route="/livez"' not in second.render()[0]


def test_keys_with_underscores_in_the_secret_name_their_tenant() -> None:
    from service.tenants import tenant_of_key

    assert tenant_of_key("sk_acme_abc_def-ghi") == "acme"
    assert tenant_of_key("sk_my-team__x") == "my-team"
    assert tenant_of_key("sk_acme_") is None and tenant_of_key("sk__x") is None
