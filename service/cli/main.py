"""``sessionctl`` entry point: one sub-command per module in this package.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a
function ``(args) -> int`` whose return value is the exit code. argparse exits with 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "serve", "worker", "dev", "tenants", "sessions", "cleanup", "stats", "migrate", "reindex",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionctl",
        description="Redis-backed session service: run it, manage tenants and sessions, clean up.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"service.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
