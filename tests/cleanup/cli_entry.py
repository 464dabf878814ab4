"""``sessionctl`` with only the cleanup, sessions and stats commands, for subprocess tests.

``--slow-export-ms N`` sleeps N ms before each chunk an export writes, so a test can signal or
kill the process while it is in the middle of a run.
"""

from __future__ import annotations

import argparse
import sys
import time

from service.cli import cleanup, sessions, stats
from service.export import ExportWriter


def main() -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--slow-export-ms", type=int, default=0)
    known, rest = pre.parse_known_args()
    if known.slow_export_ms:
        delay = known.slow_export_ms / 1000
        original = ExportWriter.write

        def slow_write(self: ExportWriter, lines: list[str]) -> None:
            time.sleep(delay)
            original(self, lines)

        ExportWriter.write = slow_write  # type: ignore[method-assign]
    parser = argparse.ArgumentParser(prog="sessionctl")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (cleanup, sessions, stats):
        module.register(sub)
    args = parser.parse_args(rest)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
