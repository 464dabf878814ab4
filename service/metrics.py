"""Prometheus metrics of the API, in their own registry (one per app, so several apps in one
process, as in tests, never collide).

``sessionctl serve --workers N`` runs N processes behind one port, and a scrape reaches any one
of them: there the processes write their figures to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, which ``serve`` sets up), and a scrape adds up every
process's files. A single process keeps its figures in memory and adds the process and GC
collectors (in multiprocess mode these would describe only the process that answered).

Every label set is bounded: routes are path templates (``/v1/sessions/{session_id}``, never a
session id), methods outside the HTTP verbs fold into ``OTHER``, statuses into classes (``2xx``),
error types are class names of the service's own exception tree. Tenant ids are never labels.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A ``*_created`` series per counter and histogram doubles the series count for a timestamp
# nobody graphs; off for every registry of the process.
disable_created_metrics()  # type: ignore[no-untyped-call]

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
        self.multiprocess = multiprocess_dir() is not None
        # the figures read from Redis for the last scrape, and when (time.monotonic())
        self.scraped: tuple[float, ScrapeFigures] | None = None
        if not self.multiprocess:
            for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
                r.register(collector)
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
        self.streams_open = Gauge(
            "sessions_sse_streams_open",
            "Server-Sent Event streams being served.",
            registry=r,
            multiprocess_mode="livesum",
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

    def close(self) -> None:
        """The process is ending: its live gauges (open streams) stop counting."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self, *extra: CollectorRegistry) -> tuple[bytes, str]:
        """The exposition text (of every process in multiprocess mode, then of ``extra``
        registries made for this scrape) and its content type."""
        if self.multiprocess:
            merged = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            text = generate_latest(merged)
        else:
            text = generate_latest(self.registry)
        return text + b"".join(generate_latest(r) for r in extra), CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess(processes: int) -> str | None:
    """Before ``serve`` starts ``processes`` API processes: with more than one, every process
    must write to one ``PROMETHEUS_MULTIPROC_DIR`` (a new temporary folder unless it is set).
    A set folder is emptied of an earlier run's files. Returns the folder, or None when the
    single process keeps its figures in memory."""
    folder = multiprocess_dir()
    if folder is None and processes <= 1:
        return None
    if folder is None:
        folder = tempfile.mkdtemp(prefix="sessions-metrics-")
        os.environ[MULTIPROC_ENV] = folder
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "*.db")):
        os.remove(old)
    return folder


@dataclass
class QueueFigures:
    """The queue's figures (``TurnQueue.figures``)."""

    waiting: int
    running: int
    oldest_age_s: float


@dataclass
class RedisFigures:
    """The data Redis's memory figures, from INFO, summed over a Cluster's nodes."""

    policies: dict[str, int]  # maxmemory-policy -> nodes
    used_bytes: int
    max_bytes: int  # 0: a node without a limit
    evicted_keys: int


async def read_redis_figures(client: Any) -> RedisFigures:
    """INFO memory and stats of the data Redis (every node of a Cluster)."""
    memory = await client.info("memory")
    stats = await client.info("stats")
    mem_nodes = [memory] if "maxmemory_policy" in memory else list(memory.values())
    stat_nodes = [stats] if "evicted_keys" in stats else list(stats.values())
    policies: dict[str, int] = {}
    for node in mem_nodes:
        policy = str(node.get("maxmemory_policy", "unknown"))
        policies[policy] = policies.get(policy, 0) + 1
    return RedisFigures(
        policies=policies,
        used_bytes=sum(int(n.get("used_memory", 0)) for n in mem_nodes),
        max_bytes=sum(int(n.get("maxmemory", 0)) for n in mem_nodes),
        evicted_keys=sum(int(n.get("evicted_keys", 0)) for n in stat_nodes),
    )


class ScrapeFigures:
    """Figures read from Redis for one scrape, by the process answering it: the queue and the
    data Redis belong to no process, so they are not kept by every worker. A collector, so no
    value lands in the multiprocess files."""

    def __init__(self, queue: QueueFigures | None, redis: RedisFigures | None) -> None:
        self.queue = queue
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        if self.queue is not None:
            q = self.queue
            yield GaugeMetricFamily(
                "sessions_queue_jobs",
                "Jobs waiting in the queue, not yet picked up by a worker.",
                value=q.waiting,
            )
            yield GaugeMetricFamily(
                "sessions_queue_running_jobs", "Jobs workers are running.", value=q.running
            )
            yield GaugeMetricFamily(
                "sessions_queue_oldest_job_age_seconds",
                "Age of the oldest job waiting in the queue (0 when none waits).",
                value=q.oldest_age_s,
            )
        if self.redis is not None:
            r = self.redis
            policy = GaugeMetricFamily(
                "sessions_redis_maxmemory_policy",
                "Data Redis nodes by maxmemory-policy (anything but noeviction may drop "
                "session data).",
                labels=["policy"],
            )
            for name, nodes in sorted(r.policies.items()):
                policy.add_metric([name], nodes)
            yield policy
            yield GaugeMetricFamily(
                "sessions_redis_used_memory_bytes", "Memory the data Redis uses.", r.used_bytes
            )
            yield GaugeMetricFamily(
                "sessions_redis_maxmemory_bytes",
                "maxmemory of the data Redis (0: no limit).",
                r.max_bytes,
            )
            yield CounterMetricFamily(
                "sessions_redis_evicted_keys",
                "Keys the data Redis evicted since it started.",
                r.evicted_keys,
            )

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry
