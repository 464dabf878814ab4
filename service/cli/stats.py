"""``sessionctl stats``: per tenant, live sessions, infinite sessions, events and a memory estimate.

Sessions and infinite sessions come from the index sizes (cheap). Events are exact: every
session's metadata is read, in pipelined pages. Memory is an ESTIMATE: ``MEMORY USAGE`` of every
key of a random sample of sessions, scaled to the live count, plus the tenant's index and
lifecycle stream. Exit codes: 0 done, 1 Redis unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from service.cli.support import (
    USAGE,
    UsageError,
    fail,
    load_settings,
    open_runtime,
    positive_int,
    print_json,
    table,
    tenant_arg,
    tenant_ids,
)
from service.config import Settings
from service.errors import StoreUnavailable
from service.store import TenantStore

WALK_PAGE = 1_000


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "stats",
        help="sessions, events and estimated memory per tenant",
        description="Per tenant: live sessions, infinite sessions, events, estimated memory.",
    )
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        type=tenant_arg,
        metavar="T",
        help="only this tenant (repeatable; default: every tenant)",
    )
    parser.add_argument(
        "--sample",
        type=positive_int,
        default=200,
        metavar="N",
        help="sessions sampled for the memory estimate (default 200)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except UsageError as exc:
        return fail("stats", str(exc), USAGE)
    try:
        return asyncio.run(stats(args, settings))
    except StoreUnavailable as exc:
        return fail("stats", exc.detail)


async def stats(args: argparse.Namespace, settings: Settings) -> int:
    async with open_runtime(settings) as runtime:
        tenants = await tenant_ids(runtime, args.tenant)
        rows = [await tenant_stats(runtime.store.tenant(t), args.sample) for t in tenants]
    if args.json:
        print_json({"tenants": rows, "memory_is_estimate": True})
        return 0
    print(
        table(
            [
                (
                    r["tenant"],
                    r["sessions"],
                    r["infinite_sessions"],
                    r["events"],
                    _bytes(r["memory_bytes_estimate"]),
                )
                for r in rows
            ],
            ("TENANT", "SESSIONS", "INFINITE", "EVENTS", "MEMORY (ESTIMATE)"),
        )
    )
    print("memory: MEMORY USAGE of a sample of sessions, scaled to all of them (an estimate)")
    return 0


async def tenant_stats(ts: TenantStore, sample: int) -> dict[str, Any]:
    sessions = await ts.count_live()
    finite = await ts.count_finite_live()
    events = 0
    cursor: tuple[int, str] | None = None
    while True:
        entries = await ts.index_oldest(WALK_PAGE, after=cursor)
        if not entries:
            break
        cursor = (entries[-1][1], entries[-1][0])
        events += sum(f.events for f in await ts.session_facts([sid for sid, _ in entries]))
    measured, size = await ts.memory_usage(await ts.sample_ids(sample))
    per_session = size / measured if measured else 0.0
    estimate = int(per_session * sessions) + await ts.shared_memory_usage()
    return {
        "tenant": ts.tenant_id,
        "sessions": sessions,
        "infinite_sessions": max(0, sessions - finite),
        "events": events,
        "memory_bytes_estimate": estimate,
        "memory_sample_size": measured,
    }


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
