"""``sessionctl sessions``: list, show, export and delete one tenant's sessions.

``sessions delete`` is the only way an infinite session is ever deleted: an operator naming it.
Exit codes: 0 done, 1 not found or Redis unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from service.cli.support import (
    USAGE,
    UsageError,
    confirm,
    fail,
    label_arg,
    load_settings,
    note_unregistered,
    open_runtime,
    positive_int,
    print_json,
    table,
    tenant_arg,
)
from service.config import Settings
from service.errors import InvalidInput, SessionNotFound, StoreUnavailable
from service.export import ExportWriter, dumps, header, session_lines
from service.ids import validate_session_id
from service.models import SessionInfo
from service.retention import parse_labels
from service.store import MAX_PAGE, TenantStore


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sessions",
        help="list, show, export or delete sessions of one tenant",
        description="Inspect and manage one tenant's sessions.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--tenant", required=True, type=tenant_arg, metavar="T", help="tenant id")
        return p

    p = action("list", "list sessions, most recently modified first")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        type=label_arg,
        metavar="K=V",
        help="only sessions carrying this label (repeatable: all must match)",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="at most N sessions (default 50)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = action("show", "show one session's metadata")
    p.add_argument("session_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = action("export", "export one session: its metadata and every event")
    p.add_argument("session_id", metavar="ID")
    p.add_argument(
        "--output",
        "-o",
        default="-",
        metavar="FILE",
        help="file to write (atomically; .gz compresses); - for stdout (default)",
    )
    p.add_argument(
        "--format",
        choices=("jsonl", "json"),
        default="jsonl",
        help="jsonl: a session line then one event per line (default); json: one "
        "object {session, events}",
    )

    p = action("delete", "delete one session, infinite or not, with all its events")
    p.add_argument("session_id", metavar="ID")
    p.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask (required when stdin is not a terminal)",
    )
    parser.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        if getattr(args, "session_id", None) is not None:
            validate_session_id(args.session_id)
        labels = parse_labels(f"{k}={v}" for k, v in getattr(args, "label", []))
    except (UsageError, InvalidInput) as exc:
        return fail("sessions", getattr(exc, "detail", str(exc)), USAGE)
    try:
        if args.action == "delete" and not args.yes and not confirm_delete(args, settings):
            return 1
        return asyncio.run(_dispatch(args, settings, labels))
    except SessionNotFound as exc:
        return fail("sessions", exc.detail)
    except StoreUnavailable as exc:
        return fail("sessions", exc.detail)
    except UsageError as exc:
        return fail("sessions", str(exc), USAGE)


async def _dispatch(args: argparse.Namespace, settings: Settings, labels: dict[str, str]) -> int:
    async with open_runtime(settings) as runtime:
        if args.action != "delete" or args.yes:  # (else confirm_delete has noted it)
            await note_unregistered(runtime, [args.tenant])
        ts = runtime.store.tenant(args.tenant)
        if args.action == "list":
            return await list_sessions(ts, labels, args.limit, args.json)
        if args.action == "show":
            return show(await ts.get(args.session_id), args.json)
        if args.action == "export":
            return await export(ts, args.session_id, args.output, args.format)
        await ts.delete(args.session_id)
        print(f"deleted {ts.tenant_id}/{args.session_id}")
        return 0


async def list_sessions(ts: TenantStore, labels: dict[str, str], limit: int, as_json: bool) -> int:
    found: list[SessionInfo] = []
    cursor: str | None = None
    while len(found) < limit:
        page = await ts.list_sessions(
            limit=min(MAX_PAGE, limit - len(found)), cursor=cursor, labels=labels or None
        )
        found += page.data
        cursor = page.next_cursor
        if cursor is None:
            break
    if as_json:
        # Listing reads no system messages (``sessions show`` has them).
        print_json([info.model_dump(mode="json", exclude={"system_message"}) for info in found])
        return 0
    rows = [
        (
            info.session_id,
            _when(info.modified_at),
            _when(info.created_at),
            info.event_count,
            info.message_count,
            "never (infinite)" if info.expires_at is None else _when(info.expires_at),
            ",".join(f"{k}={v}" for k, v in sorted(info.labels.items())),
        )
        for info in found
    ]
    headers = ("SESSION", "MODIFIED", "CREATED", "EVENTS", "MESSAGES", "EXPIRES", "LABELS")
    print(table(rows, headers))
    if cursor is not None:
        print("(more sessions exist; raise --limit to see them)", file=sys.stderr)
    return 0


def show(info: SessionInfo, as_json: bool) -> int:
    data = info.model_dump(mode="json")
    if as_json:
        print_json(data)
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
        print(f"{key.ljust(width)}  {text}")
    return 0


async def export(ts: TenantStore, session_id: str, output: str, fmt: str) -> int:
    info = await ts.get(session_id)

    async def chunks() -> AsyncIterator[list[str]]:
        if fmt == "json":
            events = [e async for e in ts.iter_events(session_id)]
            yield [dumps({**header(info), "events": events})]
        else:
            async for chunk in session_lines(ts, info):
                yield chunk

    if output == "-":
        async for chunk in chunks():
            sys.stdout.write("".join(line + "\n" for line in chunk))
        sys.stdout.flush()
        return 0
    writer = ExportWriter(Path(output))
    try:
        await asyncio.to_thread(writer.open)
        async for chunk in chunks():
            await asyncio.to_thread(writer.write, chunk)
        path = await asyncio.to_thread(writer.commit)
    except OSError as exc:
        writer.abort()
        return fail("sessions export", f"cannot write {output}: {exc.strerror or exc}")
    except BaseException:
        writer.abort()
        raise
    print(f"exported {session_id} ({info.event_count} events) to {path}", file=sys.stderr)
    return 0


def confirm_delete(args: argparse.Namespace, settings: Settings) -> bool:
    """Ask before deleting (outside the event loop); refuses without a terminal."""
    if not sys.stdin.isatty():
        raise UsageError("refusing to delete without --yes (stdin is not a terminal)")

    async def describe() -> SessionInfo:
        async with open_runtime(settings) as runtime:
            await note_unregistered(runtime, [args.tenant])
            return await runtime.store.tenant(args.tenant).get(args.session_id)

    info = asyncio.run(describe())
    kind = "INFINITE session" if info.infinite else "session"
    question = f"Delete {kind} {info.session_id!r} ({info.event_count} events) of {args.tenant}?"
    if confirm(question):
        return True
    print("Nothing deleted.", file=sys.stderr)
    return False


def _when(value: Any) -> str:
    return str(value.strftime("%Y-%m-%d %H:%M:%S"))
