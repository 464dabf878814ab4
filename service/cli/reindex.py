"""``sessionctl reindex``: move the session index to the shard layout of the current
``SESSIONS_INDEX_SHARDS`` after it changed, then repair the index.

Each entry of the earlier layout (``--from-shards N``, the value before the change) that the
current number of shards places elsewhere is moved there: added as an index update of the time the
session was last written (a newer write or a delete wins), then removed from its earlier shard
unless the session was written meanwhile. It is safe while the service runs (a list page shows a
session once even while it is in two shards). Then the repair pass removes entries whose session
is gone, announcing each expiry not announced yet, and on a Cluster gives every session its seat.
``--dry-run`` counts the entries that would move and changes nothing. Progress goes to stderr.
Exit codes: 0 done, 1 Redis unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict
from typing import Any

from service.cli.support import (
    USAGE,
    UsageError,
    fail,
    load_settings,
    open_runtime,
    positive_int,
    print_json,
    tenant_arg,
    tenant_ids,
)
from service.config import Settings
from service.errors import StoreUnavailable
from service.store.repair import RepairCounts


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "reindex",
        help="move the session index to the current SESSIONS_INDEX_SHARDS, then repair it",
        description="After SESSIONS_INDEX_SHARDS changed: move every index entry to the shard "
        "the current setting gives it, then remove entries of sessions that are gone.",
    )
    parser.add_argument(
        "--from-shards",
        type=positive_int,
        required=True,
        metavar="N",
        help="SESSIONS_INDEX_SHARDS before the change",
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
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except UsageError as exc:
        return fail("reindex", str(exc), USAGE)
    try:
        return asyncio.run(reindex(args, settings))
    except StoreUnavailable as exc:
        return fail("reindex", exc.detail)


async def reindex(args: argparse.Namespace, settings: Settings) -> int:
    rows: list[dict[str, Any]] = []
    async with open_runtime(settings) as runtime:
        tenants = await tenant_ids(runtime, args.tenant)
        for tenant in tenants:
            ts = runtime.store.tenant(tenant)

            def progress(c: RepairCounts, step: str, tenant: str = tenant) -> None:
                if not args.no_progress and not args.json:
                    print(
                        f"{tenant}: {step}: {c.checked} entries checked, {c.moved} moved, "
                        f"{c.removed} removed",
                        file=sys.stderr,
                        flush=True,
                    )

            moved = await ts.reindex(
                args.from_shards, dry_run=args.dry_run, progress=lambda c: progress(c, "move")
            )
            row: dict[str, Any] = {"tenant": tenant, "moved": moved.moved}
            if not args.dry_run:
                repaired = await ts.repair_index(progress=lambda c: progress(c, "repair"))
                row.update(
                    {k: v for k, v in asdict(repaired).items() if k not in ("moved", "cursor")}
                )
            rows.append(row)
    if args.json:
        print_json({"dry_run": args.dry_run, "from_shards": args.from_shards, "tenants": rows})
        return 0
    verb = "would move" if args.dry_run else "moved"
    for r in rows:
        extra = (
            ""
            if args.dry_run
            else (
                f", {r['removed']} entries of gone sessions removed ({r['expired']} expiries "
                f"announced), {r['seated']} seats restored"
            )
        )
        print(f"{r['tenant']}: {verb} {r['moved']} index entries{extra}")
    return 0
