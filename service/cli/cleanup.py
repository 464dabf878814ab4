"""``sessionctl cleanup``: delete sessions matching filters, optionally exporting each one first.

The same code (``service.cleanup``) runs the retention cron job. Exit codes: 0 done; 1 some
sessions failed, the run was interrupted, or Redis was unreachable (run it again to finish); 2 bad
usage (no filter without ``--all``, bad duration or label...).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.cleanup import (
    Candidate,
    Cleanup,
    Options,
    Outcome,
    Report,
    SessionResult,
    log_result,
    select_matching,
    server_time_ms,
)
from service.cli.support import (
    USAGE,
    ProgressBar,
    UsageError,
    confirm,
    duration_arg,
    fail,
    label_arg,
    load_settings,
    open_runtime,
    positive_int,
    print_json,
    stop_on_signals,
    tenant_arg,
    tenant_ids,
)
from service.config import Settings
from service.errors import InvalidInput, StoreUnavailable
from service.logging import configure_logging
from service.retention import Filter, parse_labels

EPILOG = """\
filters combine with AND; infinite sessions are kept unless --include-infinite is given.
On SIGINT/SIGTERM the run stops after the current session (an unfinished export is removed and
its session kept), prints its summary and exits with 1; running it again finishes the work.

exit codes: 0 done, 1 partial failure or interrupted, 2 bad usage
"""


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "cleanup",
        help="delete sessions by age, idleness or label (optionally export them first)",
        description="Delete sessions matching filters, in every tenant or the ones named.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--tenant",
        action="append",
        default=[],
        type=tenant_arg,
        metavar="T",
        help="only this tenant (repeatable; default: every tenant)",
    )
    add(
        "--older-than",
        type=duration_arg,
        metavar="DUR",
        help="created at least DUR ago (30d, 12h, 90m, 45s, 2w)",
    )
    add("--idle-for", type=duration_arg, metavar="DUR", help="last written at least DUR ago")
    add(
        "--label",
        action="append",
        default=[],
        type=label_arg,
        metavar="K=V",
        help="carrying this label (repeatable: all must match)",
    )
    add(
        "--all",
        action="store_true",
        dest="everything",
        help="no filter: every session (required when no filter is given)",
    )
    add("--include-infinite", action="store_true", help="also delete matching infinite sessions")
    add("--dry-run", action="store_true", help="report what would be deleted; delete nothing")
    add(
        "--export-to",
        type=Path,
        metavar="DIR",
        help="export each session to DIR/<tenant>/<id>.jsonl before deleting it",
    )
    add("--gzip", action="store_true", help="gzip the exports (.jsonl.gz)")
    add("--limit", type=positive_int, metavar="N", help="at most N sessions in this run")
    add("--json", action="store_true", help="print one JSON summary on stdout")
    add("--yes", "-y", action="store_true", help="do not ask for confirmation on a terminal")
    parser.set_defaults(func=run)  # fmt: skip


def build_filter(args: argparse.Namespace) -> Filter:
    try:
        labels = parse_labels(f"{k}={v}" for k, v in args.label)
    except InvalidInput as exc:
        raise UsageError(exc.detail) from exc
    filt = Filter(
        older_than=args.older_than,
        idle_for=args.idle_for,
        labels=labels,
        include_infinite=args.include_infinite,
        everything=args.everything,
    )
    if not filt.has_criteria and not filt.everything:
        raise UsageError("give at least one filter (--older-than, --idle-for, --label) or --all")
    if args.gzip and not args.export_to:
        raise UsageError("--gzip needs --export-to")
    return filt


def run(args: argparse.Namespace) -> int:
    try:
        filt = build_filter(args)
        settings = load_settings()
    except UsageError as exc:
        return fail("cleanup", str(exc), USAGE)
    configure_logging(settings)
    stop = asyncio.Event()
    try:
        tenants, candidates = asyncio.run(select(args, filt, settings, stop))
        if candidates and not (args.dry_run or args.yes or stop.is_set()) and sys.stdin.isatty():
            question = f"Delete {len(candidates)} sessions from {len(tenants)} tenant(s)?"
            if not confirm(question):
                print("Nothing deleted.", file=sys.stderr)
                return 1
        report = asyncio.run(process(args, settings, candidates, stop))
    except StoreUnavailable as exc:
        return fail("cleanup", exc.detail)
    if args.json:
        print_json({"filters": filt.describe(), "tenants_searched": tenants, **report.to_json()})
    else:
        print(summary(report, args.export_to))
    return 1 if report.failed or report.interrupted else 0


async def select(
    args: argparse.Namespace, filt: Filter, settings: Settings, stop: asyncio.Event
) -> tuple[list[str], list[Candidate]]:
    """Phase one: the tenants searched and the sessions selected, in processing order."""
    async with open_runtime(settings) as runtime:
        tenants = await tenant_ids(runtime, args.tenant)
        candidates: list[Candidate] = []
        with stop_on_signals(stop):
            now = await server_time_ms(runtime.store)
            for tenant in tenants:
                left = None if args.limit is None else args.limit - len(candidates)
                if left is not None and left <= 0:
                    break
                ts = runtime.store.tenant(tenant)
                candidates += await select_matching(ts, filt, now, limit=left, stop=stop)
    return tenants, candidates


async def process(
    args: argparse.Namespace, settings: Settings, candidates: list[Candidate], stop: asyncio.Event
) -> Report:
    """Phase two (after the confirmation, if one was asked): export and delete."""
    bar = ProgressBar(len(candidates)) if sys.stderr.isatty() and candidates else None
    options = Options(dry_run=args.dry_run, export_dir=args.export_to, gzip=args.gzip)
    async with open_runtime(settings) as runtime:
        with stop_on_signals(stop):
            processor = Cleanup(runtime.store, options, stop=stop, on_result=_reporter(bar))
            report = await processor.process(candidates)
    if bar is not None:
        bar.close()
    report.interrupted = report.interrupted or (stop.is_set() and not candidates)
    return report


def _reporter(bar: ProgressBar | None) -> Callable[[SessionResult], None]:
    def on_result(result: SessionResult) -> None:
        if bar is None:
            log_result(result)
            return
        if result.outcome is Outcome.FAILED:
            bar.message(f"failed: {result.tenant}/{result.session_id}: {result.error}")
        bar.advance(result.session_id)

    return on_result


def summary(report: Report, export_to: Path | None) -> str:
    """The human summary printed at the end of a run."""
    counts = report.counts()
    lines: list[str] = []
    if report.dry_run:
        lines.append(f"Dry run: {counts['would-delete']} sessions would be deleted.")
        lines += [f"  {r.tenant}/{r.session_id}" for r in report.results]
    else:
        lines.append(
            f"Deleted {counts['deleted']} of {report.selected} selected sessions "
            f"in {report.duration_s:.1f} s: {counts['skipped-changed']} skipped (written "
            f"since selected, or a turn pending), {counts['skipped-gone']} already gone, "
            f"{counts['failed']} failed."
        )
        if export_to:
            lines.append(f"Exported {counts['exported']} sessions to {export_to}.")
        for tenant in report.tenants:
            c = report.counts(tenant)
            lines.append(
                f"  {tenant}: {c['deleted']} deleted, "
                f"{c['skipped-changed'] + c['skipped-gone']} skipped, {c['failed']} failed"
            )
        for r in report.results:
            if r.outcome is Outcome.FAILED:
                lines.append(f"  failed {r.tenant}/{r.session_id}: {r.error}")
    if report.stopped_reason:
        lines.append(f"Stopped: {report.stopped_reason}. Run again once the cause is fixed.")
    elif report.interrupted:
        lines.append(
            f"Interrupted after {len(report.results)} of {report.selected} sessions; "
            "run the same command again to finish."
        )
    return "\n".join(lines)
