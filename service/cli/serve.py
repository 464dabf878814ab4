"""``sessionctl serve``: run the HTTP API under uvicorn (``service.api.main:app``, a factory)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from service.cli.support import UsageError, fail, load_settings, positive_int
from service.logging import configure_logging

APP_FACTORY = "service.api.main:app"
KEEP_ALIVE_S = 65


def port_arg(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535 (got {text!r})")
    return value


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the HTTP API",
        description="Run the HTTP API with uvicorn. Reads SESSIONS_* settings from the "
        "environment; SESSIONS_REDIS_URL is required (use `sessionctl dev` for a local run).",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0)")
    parser.add_argument("--port", type=port_arg, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="processes (default: 1)"
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="read the client address from X-Forwarded-For, written by --proxy-hops proxies "
        "(default 1) and sent from the addresses in --forwarded-allow-ips (the client address "
        "counts API key failures, so enable this behind a proxy)",
    )
    parser.add_argument(
        "--proxy-hops",
        type=positive_int,
        default=None,
        metavar="N",
        help="proxies in front of the API, each appending to X-Forwarded-For; the client is the "
        "N-th entry from the right, what the client wrote itself is ignored (implies "
        "--proxy-headers; default: SESSIONS_PROXY_HOPS, else 1 with --proxy-headers)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="comma-separated proxy addresses or networks whose X-Forwarded-For is read, or * "
        "for any peer (default: SESSIONS_FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)",
    )
    parser.set_defaults(func=run)


def uvicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "factory": True,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        # The app reads X-Forwarded-For itself (service.api.proxy): uvicorn's reading trusts the
        # left-most entry, which the client writes, when every peer is trusted.
        "proxy_headers": False,
        "access_log": False,  # the app logs one line per request itself
        # Longer than the idle timeouts of clients' connection pools (httpx: 5 s) and of load
        # balancers (60 s is common): the side that closes an idle connection must be the
        # client, or a request sent just as the server closes it fails with a reset.
        "timeout_keep_alive": KEEP_ALIVE_S,
        "log_config": None,  # keep the service's logging configuration
        "timeout_graceful_shutdown": 20,
    }


def proxy_environment(args: argparse.Namespace) -> dict[str, str]:
    """The settings the proxy flags stand for (``SESSIONS_PROXY_HOPS``,
    ``SESSIONS_FORWARDED_ALLOW_IPS``): handed to the app, in every worker process, through the
    environment."""
    env: dict[str, str] = {}
    if args.proxy_hops is not None:
        env["SESSIONS_PROXY_HOPS"] = str(args.proxy_hops)
    elif args.proxy_headers and int(os.environ.get("SESSIONS_PROXY_HOPS") or 0) == 0:
        env["SESSIONS_PROXY_HOPS"] = "1"
    if args.forwarded_allow_ips is not None:
        env["SESSIONS_FORWARDED_ALLOW_IPS"] = args.forwarded_allow_ips
    return env


def run(args: argparse.Namespace) -> int:
    os.environ.update(proxy_environment(args))
    try:
        settings = load_settings()
    except UsageError as exc:
        return fail("serve", str(exc), 2)
    configure_logging(settings)
    import uvicorn

    from service.metrics import prepare_multiprocess

    prepare_multiprocess(args.workers)
    uvicorn.run(APP_FACTORY, **uvicorn_options(args))
    return 0
