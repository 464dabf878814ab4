"""``sessionctl worker``: run the arq worker (model turns, titles, compaction, cron jobs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from service.cli.serve import port_arg
from service.cli.support import UsageError, fail, read_settings
from service.logging import configure_logging
from service.runtime import settle_heap
from service.tracing import configure_tracing


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "worker",
        help="run the worker that makes model calls and runs expiry and retention jobs",
        description="Run the arq worker. Reads SESSIONS_* settings from the environment.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if this host's worker recorded its health recently, else 1 (liveness probe)",
    )
    parser.add_argument("--burst", action="store_true", help="run queued jobs, then exit")
    parser.add_argument(
        "--metrics-port",
        type=port_arg,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port (default: SESSIONS_WORKER_METRICS_PORT, "
        "else none)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = read_settings()
    except UsageError as exc:
        return fail("worker", str(exc), 2)
    if settings.effective_queue_url is None and not settings.redis_sentinels:
        print(
            "sessionctl worker: set SESSIONS_REDIS_URL (or SESSIONS_QUEUE_REDIS_URL); "
            "for a local all-in-one run use `sessionctl dev`",
            file=sys.stderr,
        )
        return 2
    from workers.settings import build_worker, check_health

    if args.check:
        healthy = asyncio.run(check_health(settings))
        print("healthy" if healthy else "unhealthy: no recent health record for this host")
        return 0 if healthy else 1
    port = args.metrics_port or settings.worker_metrics_port
    if port is not None:
        from workers.metrics import serve

        try:
            serve(port)
        except OSError as exc:  # taken (another worker of this pod?), or not ours to bind
            return fail("worker", f"cannot serve metrics on port {port}: {exc.strerror}", 2)
    configure_logging(settings)
    configure_tracing("redis-sessions-worker")
    worker = build_worker(settings, burst=args.burst)
    settle_heap()
    worker.run()
    return 0
