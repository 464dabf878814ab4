"""Shared pieces of the operator commands: runtime start-up, argument types, signals, output."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TextIO

from pydantic import ValidationError

from service.config import Settings
from service.errors import InvalidInput
from service.ids import validate_tenant_id
from service.retention import parse_duration, parse_label
from service.runtime import Runtime, build_runtime

USAGE = 2


class UsageError(Exception):
    """Bad flags or configuration: the command prints it and exits with 2."""


def duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.detail) from exc


def label_arg(text: str) -> tuple[str, str]:
    try:
        return parse_label(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.detail) from exc


def tenant_arg(text: str) -> str:
    try:
        return validate_tenant_id(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.detail) from exc


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return value


def fail(command: str, message: str, code: int = 1) -> int:
    print(f"sessionctl {command}: error: {message}", file=sys.stderr)
    return code


def read_settings() -> Settings:
    """The SESSIONS_* settings of the environment; a ``UsageError`` saying which are invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        raise UsageError(f"invalid SESSIONS_* settings: {exc}") from exc


def load_settings() -> Settings:
    settings = read_settings()
    if not settings.has_data_redis:
        raise UsageError(
            "set SESSIONS_REDIS_URL (or SESSIONS_REDIS_SENTINELS, SESSIONS_REDIS_CLUSTER_NODES) "
            "to the data Redis"
        )
    return settings


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.close()


async def tenant_ids(runtime: Runtime, named: Sequence[str]) -> list[str]:
    """The tenants to work on: ``named`` (see ``note_unregistered``), or every registered
    tenant."""
    if not named:
        return [t.id for t in await runtime.tenants.all()]
    chosen = list(dict.fromkeys(named))
    await note_unregistered(runtime, chosen)
    return chosen


async def note_unregistered(runtime: Runtime, named: Sequence[str]) -> None:
    """Say on stderr which of ``named`` are not registered tenants (a typo shows for what it
    is); they are still worked on, as a removed tenant's data remains reachable."""
    registered = {t.id for t in await runtime.tenants.all()}
    for tenant in named:
        if tenant not in registered:
            print(
                f"note: tenant {tenant!r} is not registered; going on with what Redis holds of it",
                file=sys.stderr,
            )


@contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (the command finishes its current step and reports); a second
    signal gets the default behaviour (immediate exit)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first(sig: signal.Signals) -> None:
        stop.set()
        print(
            f"\n{sig.name}: stopping after the current session (again to quit now)",
            file=sys.stderr,
        )
        for s in signals:
            loop.remove_signal_handler(s)

    for sig in signals:
        loop.add_signal_handler(sig, first, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def confirm(question: str) -> bool:
    """Ask on the terminal (call it outside an event loop); False when stdin is not one, on
    end of input and on Ctrl-C."""
    if not sys.stdin.isatty():
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in {"y", "yes"}


def print_json(value: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=stream or sys.stdout)


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


class ProgressBar:
    """A one-line progress bar on a terminal (redrawn at most 10 times a second)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self._drawn = 0.0

    def advance(self, note: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        if self.done >= self.total or now - self._drawn >= 0.1:
            self._drawn = now
            self.draw(note)

    def draw(self, note: str = "") -> None:
        share = self.done / self.total if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {share:4.0%} {note}\x1b[K")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line above the bar."""
        self.stream.write(f"\r\x1b[K{text}\n")
        self.draw()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
