"""``sessionctl tenants``: create, list, show, disable, enable tenants and rotate their keys.

Talks to the data Redis (``SESSIONS_REDIS_URL``) directly. A new key is printed once, alone on
the last line of stdout (or inside ``--json``), so scripts can capture it; notes go to stderr.
Exit codes: 0 done, 1 refused (tenant exists, unknown tenant, Redis unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
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
)
from service.errors import InvalidInput, ServiceError
from service.models import ms_to_datetime
from service.runtime import Runtime
from service.tenants import MAX_CONTEXT_WINDOWS, Limits, Tenant

EPILOG = "exit codes: 0 done, 1 refused (exists, unknown, Redis unreachable), 2 bad usage"


def rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (got {text!r})")
    return value


def window_arg(text: str) -> tuple[str, int]:
    """``MODEL=TOKENS`` of ``--context-window``."""
    model, _, tokens = text.rpartition("=")
    if not 1 <= len(model) <= 200 or not tokens.isdigit() or not 256 <= int(tokens) <= 10**8:
        raise argparse.ArgumentTypeError(
            f"expected MODEL=TOKENS, TOKENS from 256 to 100000000 (got {text!r})"
        )
    return model, int(tokens)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "tenants",
        help="manage tenants and their API keys",
        description="Manage tenants in the data Redis named by SESSIONS_REDIS_URL.",
        epilog=EPILOG,
    )
    cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = cmds.add_parser("create", help="create a tenant and print its API key once")
    create.add_argument("tenant", type=tenant_arg, metavar="NAME", help="tenant id (a-z 0-9 -)")
    create.add_argument("--name", help="display name (default: the id)")
    create.add_argument("--max-sessions", type=positive_int, metavar="N", help="session quota")
    create.add_argument("--max-message-bytes", type=positive_int, metavar="N", help="prompt cap")
    create.add_argument(
        "--rate-limit", type=rate_arg, metavar="R", help="requests per second (0 = unlimited)"
    )
    create.add_argument(
        "--context-window",
        type=window_arg,
        action="append",
        default=[],
        metavar="MODEL=TOKENS",
        help="context window of a model or model-name prefix (repeatable)",
    )
    create.add_argument("--json", action="store_true", help='print {"tenant", "api_key"}')
    create.set_defaults(func=run, handler=_create)

    listing = cmds.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=run, handler=_list)

    show = cmds.add_parser("show", help="show one tenant as JSON")
    show.add_argument("tenant", type=tenant_arg, metavar="NAME")
    show.set_defaults(func=run, handler=_show)

    for action, text in (("disable", "refuse the tenant's key"), ("enable", "accept it again")):
        cmd = cmds.add_parser(action, help=text)
        cmd.add_argument("tenant", type=tenant_arg, metavar="NAME")
        cmd.set_defaults(func=run, handler=_disable if action == "disable" else _enable)

    rotate = cmds.add_parser("rotate-key", help="replace the API key (the old one stops working)")
    rotate.add_argument("tenant", type=tenant_arg, metavar="NAME")
    rotate.add_argument("--json", action="store_true", help='print {"tenant", "api_key"}')
    rotate.set_defaults(func=run, handler=_rotate)


Handler = Callable[[Runtime, argparse.Namespace], Awaitable[None]]


def run(args: argparse.Namespace) -> int:
    command = f"tenants {args.action}"
    try:
        settings = load_settings()
    except UsageError as exc:
        return fail(command, str(exc), USAGE)
    handler: Handler = args.handler

    async def main() -> None:
        async with open_runtime(settings) as runtime:
            await handler(runtime, args)

    try:
        asyncio.run(main())
    except InvalidInput as exc:
        return fail(command, exc.detail, USAGE)
    except ServiceError as exc:
        return fail(command, exc.detail, 1)
    return 0


def public(tenant: Tenant) -> dict[str, Any]:
    return tenant.model_dump(mode="json")


def _print_key(tenant: Tenant, api_key: str, as_json: bool, note: str) -> None:
    if as_json:
        print(json.dumps({"tenant": public(tenant), "api_key": api_key}))
        return
    print(note, file=sys.stderr)
    print(api_key)


async def _create(runtime: Runtime, args: argparse.Namespace) -> None:
    limits = Limits(
        max_sessions=args.max_sessions,
        max_message_bytes=args.max_message_bytes,
        rate_limit_per_second=args.rate_limit,
    )
    windows = dict(args.context_window)
    if len(windows) > MAX_CONTEXT_WINDOWS:
        raise InvalidInput(f"a tenant has at most {MAX_CONTEXT_WINDOWS} context windows")
    tenant, api_key = await runtime.tenants.create(
        args.tenant, name=args.name, limits=limits, context_windows=windows
    )
    note = f"Created tenant {tenant.id!r}. Its API key is shown once; store it now:"
    _print_key(tenant, api_key, args.json, note)


async def _rotate(runtime: Runtime, args: argparse.Namespace) -> None:
    tenant, api_key = await runtime.tenants.rotate_key(args.tenant)
    note = f"New API key of tenant {tenant.id!r} (the previous key no longer works):"
    _print_key(tenant, api_key, args.json, note)


async def _list(runtime: Runtime, args: argparse.Namespace) -> None:
    tenants = await runtime.tenants.all()
    if args.json:
        print_json([public(t) for t in tenants])
        return
    rows = [
        (
            t.id,
            t.name,
            "disabled" if t.disabled else "active",
            _date(ms_to_datetime(t.created_at_ms)),
            f"...{t.key_hint}",
        )
        for t in tenants
    ]
    print(table(rows, ["TENANT", "NAME", "STATE", "CREATED", "KEY"]))


async def _show(runtime: Runtime, args: argparse.Namespace) -> None:
    print_json(public(await runtime.tenants.get(args.tenant)))


async def _disable(runtime: Runtime, args: argparse.Namespace) -> None:
    tenant = await runtime.tenants.set_disabled(args.tenant, True)
    print(f"tenant {tenant.id!r} disabled: its key is refused until it is enabled again")


async def _enable(runtime: Runtime, args: argparse.Namespace) -> None:
    tenant = await runtime.tenants.set_disabled(args.tenant, False)
    print(f"tenant {tenant.id!r} enabled")


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")
