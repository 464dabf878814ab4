"""``sessionctl migrate``: convert sessions written by the earlier layout (one stream holding every
event) into durable history, ahead of time.

Nothing requires it: a session of the earlier layout converts itself on its first write or read.
Running it converts the rest at a time of the operator's choosing (one short script per session).
``--dry-run`` counts what would be converted and changes nothing. Exit codes: 0 done, 1 Redis
unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from service.cli.support import (
    USAGE,
    ProgressBar,
    UsageError,
    fail,
    load_settings,
    open_runtime,
    print_json,
    tenant_arg,
    tenant_ids,
)
from service.config import Settings
from service.errors import SessionNotFound, StoreUnavailable
from service.store import TenantStore

WALK_PAGE = 500


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "migrate",
        help="convert sessions of the earlier layout into durable history",
        description="Convert sessions written by the earlier layout (one stream of every event) "
        "into durable history. Sessions also convert themselves on first use.",
    )
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        type=tenant_arg,
        metavar="T",
        help="only this tenant (repeatable; default: every tenant)",
    )
    parser.add_argument("--dry-run", action="store_true", help="count, change nothing")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except UsageError as exc:
        return fail("migrate", str(exc), USAGE)
    try:
        return asyncio.run(migrate(args, settings))
    except StoreUnavailable as exc:
        return fail("migrate", exc.detail)


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    rows = []
    async with open_runtime(settings) as runtime:
        tenants = await tenant_ids(runtime, args.tenant)
        for tenant in tenants:
            ts = runtime.store.tenant(tenant)
            total = await ts.count_live()
            bar = None
            if not args.no_progress and not args.json and sys.stderr.isatty():
                bar = ProgressBar(total)
            try:
                rows.append(await migrate_tenant(ts, dry_run=args.dry_run, bar=bar))
            finally:
                if bar is not None:
                    bar.close()
    if args.json:
        print_json({"dry_run": args.dry_run, "tenants": rows})
        return 0
    for r in rows:
        done = (  # a dry run converts nothing, so it cannot count the items
            f"would convert {r['converted']}"
            if args.dry_run
            else f"converted {r['converted']} ({r['items']} history items)"
        )
        print(f"{r['tenant']}: {r['sessions']} sessions checked, {done}")
    return 0


async def migrate_tenant(
    ts: TenantStore, *, dry_run: bool, bar: ProgressBar | None = None
) -> dict[str, Any]:
    """Walk the tenant's index and convert each session of the earlier layout."""
    checked = converted = items = 0
    cursor: tuple[int, str] | None = None
    while True:
        entries = await ts.index_oldest(WALK_PAGE, after=cursor)
        if not entries:
            break
        cursor = (entries[-1][1], entries[-1][0])
        ids = [sid for sid, _ in entries]
        legacy = await ts.legacy_sessions(ids)
        for sid in ids:
            checked += 1
            if sid in legacy:
                if dry_run:
                    converted += 1
                else:
                    try:
                        written = await ts.migrate(sid)
                    except SessionNotFound:
                        written = -1
                    if written >= 0:
                        converted += 1
                        items += written
            if bar is not None:
                bar.advance(sid)
    return {"tenant": ts.tenant_id, "sessions": checked, "converted": converted, "items": items}
