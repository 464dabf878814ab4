"""Prometheus metrics of one API process, in their own registry (one per app, so several apps in
one process, as in tests, never collide).

Every label set is bounded: routes are path templates (``/v1/sessions/{session_id}``, never a
session id), methods outside the HTTP verbs fold into ``OTHER``, statuses into classes (``2xx``),
error types are class names of the service's own exception tree. Tenant ids are never labels.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Metrics:
    """The API's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.requests = Counter(
            "sessions_http_requests",
            "HTTP requests by method, route template and status class.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sessions_http_request_duration_seconds",
            "Time to the end of the response (for streams: until the stream closes).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turns_enqueued = Counter(
            "sessions_turns_enqueued", "Turns handed to the queue (retries included).", registry=r
        )
        self.errors = Counter(
            "sessions_errors",
            "Error responses by error type (class names of the service's error tree).",
            ["type"],
            registry=r,
        )
        self.auth_failures = Counter(
            "sessions_auth_failures", "Requests refused for a missing or invalid key.", registry=r
        )
        self.rate_limited = Counter(
            "sessions_rate_limited",
            "Requests refused by a rate limit (tenant request rate or API key failures).",
            ["limit"],
            registry=r,
        )
        self.eviction_unsafe = Gauge(
            "sessions_redis_eviction_unsafe",
            "1 when the data Redis' maxmemory-policy may evict session keys (read by /readyz).",
            registry=r,
        )
        self.streams_open = Gauge(
            "sessions_sse_streams_open", "Server-Sent Event streams being served.", registry=r
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        m = method_label(method)
        key = (m, route, status_class(status))
        children = self._request_children.get(key)
        if children is None:  # a bounded set, like the labels: looked up once each
            children = (self.requests.labels(*key), self.latency.labels(m, route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
