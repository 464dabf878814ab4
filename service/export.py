"""Session export: JSON Lines, one file per session, written so that a file that exists is whole.

Format (``<dir>/<tenant>/<session_id>.jsonl``, or ``.jsonl.gz`` gzip-compressed):

    {"session": {...SessionInfo...}}                  first line: the session's metadata
    {"id": "...", "timestamp": "...", "type": "...", "data": {...}}   then one event per line

A file is written under a hidden temporary name (``.<name>.partial``) in the same folder, flushed,
``fsync``'ed and renamed, and the folder is ``fsync``'ed: after a crash a final name holds a
complete export or nothing. Cleanup deletes a session only after its export is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from service.models import Event, SessionInfo
from service.store import EXPORT_PAGE, TenantStore

PARTIAL_SUFFIX = ".partial"


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def header(info: SessionInfo) -> dict[str, Any]:
    return {"session": info.model_dump(mode="json")}


def export_path(root: Path, tenant: str, session_id: str, *, compress: bool = False) -> Path:
    return root / tenant / (f"{session_id}.jsonl" + (".gz" if compress else ""))


async def session_lines(
    store: TenantStore, info: SessionInfo, *, page: int = EXPORT_PAGE
) -> AsyncIterator[list[str]]:
    """The export of one session as chunks of JSON lines (no newlines): the header, then pages
    of events, oldest first."""
    yield [dumps(header(info))]
    chunk: list[str] = []
    async for event in store.iter_events(info.session_id, page=page):
        chunk.append(dumps(event))
        if len(chunk) >= page:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ExportWriter:
    """One export file: ``open``, ``write`` chunks, then ``commit`` (durable rename) or ``abort``
    (the temporary file is removed). Blocking I/O: call it through ``asyncio.to_thread``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
        self._raw: BinaryIO | None = None
        self._out: BinaryIO | gzip.GzipFile | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.temp, "wb")  # noqa: SIM115 - closed in commit/abort
        if self.path.name.endswith(".gz"):
            # mtime=0 and no file name in the header: the same session gives the same bytes.
            self._out = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
        else:
            self._out = self._raw

    def write(self, lines: list[str]) -> None:
        assert self._out is not None, "open() first"
        self._out.write("".join(line + "\n" for line in lines).encode())

    def commit(self) -> Path:
        assert self._raw is not None and self._out is not None, "open() first"
        if self._out is not self._raw:
            self._out.close()  # writes the gzip trailer; leaves the file open
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self._raw = self._out = None
        os.replace(self.temp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        for stream in (self._out, self._raw):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._raw = self._out = None
        self.temp.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(path: Path) -> None:
    """Remove a committed export whose session was kept after all."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


async def export_session(
    store: TenantStore,
    info: SessionInfo,
    path: Path,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Path | None:
    """Write one session's export durably to ``path``. Returns None, leaving no file, when
    ``should_stop()`` turns true before it is complete; any error also leaves no file."""
    writer = ExportWriter(path)
    await asyncio.to_thread(writer.open)
    try:
        async for chunk in session_lines(store, info):
            if should_stop():
                await asyncio.to_thread(writer.abort)
                return None
            await asyncio.to_thread(writer.write, chunk)
        return await asyncio.to_thread(writer.commit)
    except BaseException:
        writer.abort()  # also on cancellation: close and unlink, quick and local
        raise


def read_export(path: Path) -> tuple[dict[str, Any], list[Event]]:
    """The session metadata and the events of an export file."""
    opener: Callable[..., IO[str]] = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as src:
        lines = [json.loads(line) for line in src if line.strip()]
    if not lines or "session" not in lines[0]:
        raise ValueError(f"{path} is not a session export: its first line has no 'session'")
    events: list[Event] = lines[1:]
    return lines[0]["session"], events
