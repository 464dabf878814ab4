"""Cleanup: the one implementation behind ``sessionctl cleanup`` and the retention cron job.

A run has two phases. **Select** walks a tenant's session index least recently modified first
(``TenantStore.index_oldest``; an ``idle_for`` filter bounds the walk to the idle part of the
index, and nothing modified after the run started is read) and keeps what ``retention.matches``
or the max-sessions rule picks, each with the ``modified`` time it was seen with. **Process**
handles the candidates one at a time:

1. with an export folder: read the session, export it durably (``service.export``);
2. ``TenantStore.delete(id, if_modified_ms=seen)``: one Lua script that deletes only if the
   session was not written since it was selected and has no pending turn, and emits
   ``session.deleted``. A refused delete is ``skipped-changed`` and its export is removed.

Interruption (``stop`` set by SIGINT/SIGTERM) is checked between sessions and between export
pages: an unfinished export is removed and its session kept, a finished one is followed by its
delete. Every step is idempotent, so running again after an interruption, or a crash, ends in the
state one uninterrupted run would have reached.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from service import retention
from service.connections import store_errors
from service.errors import ServiceError, SessionNotFound
from service.export import discard, export_path, export_session
from service.logging import get_logger
from service.retention import Filter
from service.store import Store, TenantStore
from service.tenants import Tenant

log = get_logger("cleanup")
SELECT_PAGE = 500
MAX_CONSECUTIVE_FAILURES = 20


class Outcome(str, Enum):
    DELETED = "deleted"
    WOULD_DELETE = "would-delete"  # dry run
    SKIPPED_CHANGED = "skipped-changed"  # written since selected, or a turn is pending
    SKIPPED_GONE = "skipped-gone"  # expired or deleted by someone else meanwhile
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Candidate:
    tenant: str
    session_id: str
    modified_ms: int
    infinite: bool = False


@dataclass(frozen=True, slots=True)
class SessionResult:
    tenant: str
    session_id: str
    outcome: Outcome
    export: str | None = None  # path of the durable export, when one was written and kept
    error: str | None = None


@dataclass(slots=True)
class Options:
    dry_run: bool = False
    export_dir: Path | None = None
    gzip: bool = False


@dataclass
class Report:
    """What a run did. ``interrupted``: stopped early by a signal; ``stopped_reason``: why a run
    gave up (too many failures in a row)."""

    dry_run: bool = False
    selected: int = 0
    results: list[SessionResult] = field(default_factory=list)
    interrupted: bool = False
    stopped_reason: str | None = None
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        found = Counter(r.outcome for r in self.results if tenant in (None, r.tenant))
        out = {o.value: found.get(o, 0) for o in Outcome}
        out["exported"] = sum(1 for r in self.results if r.export and tenant in (None, r.tenant))
        return out

    @property
    def tenants(self) -> list[str]:
        return sorted({r.tenant for r in self.results})

    @property
    def failed(self) -> bool:
        return any(r.outcome is Outcome.FAILED for r in self.results) or bool(self.stopped_reason)

    def merge(self, other: Report) -> None:
        self.selected += other.selected
        self.results += other.results
        self.interrupted = self.interrupted or other.interrupted
        self.stopped_reason = self.stopped_reason or other.stopped_reason

    def finish(self) -> Report:
        self.duration_s = round(time.monotonic() - self.started, 3)
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "stopped_reason": self.stopped_reason,
            "duration_s": self.duration_s,
            "selected": self.selected,
            "processed": len(self.results),
            "counts": self.counts(),
            "tenants": {t: self.counts(t) for t in self.tenants},
            "exported_files": [r.export for r in self.results if r.export],
            "failures": [
                {"tenant": r.tenant, "session_id": r.session_id, "error": r.error}
                for r in self.results
                if r.outcome is Outcome.FAILED
            ],
            "would_delete": [
                {"tenant": r.tenant, "session_id": r.session_id}
                for r in self.results
                if r.outcome is Outcome.WOULD_DELETE
            ],
        }


async def server_time_ms(store: Store) -> int:
    """Now, by the Redis server's clock (the clock every session timestamp comes from)."""
    with store_errors("read the server time"):
        seconds, micros = await store.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


# --- select --------------------------------------------------------------------------------------
async def select_matching(
    ts: TenantStore,
    filt: Filter,
    now_ms: int,
    *,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
    page: int = SELECT_PAGE,
) -> list[Candidate]:
    """Sessions of one tenant that ``filt`` selects at ``now_ms``, least recently modified
    first, at most ``limit``. Sessions modified after ``now_ms`` are never selected."""
    idle_bound = filt.idle_bound_ms(now_ms)
    bound = now_ms if idle_bound is None else min(now_ms, idle_bound)
    out: list[Candidate] = []
    cursor: tuple[int, str] | None = None
    while limit is None or len(out) < limit:
        if stop is not None and stop.is_set():
            break
        entries = await ts.index_oldest(page, after=cursor, max_modified_ms=bound)
        if not entries:
            break
        cursor = (entries[-1][1], entries[-1][0])
        for facts in await ts.session_facts([sid for sid, _ in entries]):
            if facts.modified_ms <= now_ms and retention.matches(facts, filt, now_ms):
                out.append(_candidate(ts, facts))
    return out if limit is None else out[:limit]


async def select_evictions(
    ts: TenantStore, max_sessions: int, now_ms: int, *, page: int = SELECT_PAGE
) -> list[Candidate]:
    """The finite sessions a max-sessions rule evicts: the least recently modified ones beyond
    ``max_sessions`` (infinite sessions are neither counted nor evicted)."""
    excess = retention.eviction_excess(await ts.count_finite_live(now_ms), max_sessions)
    out: list[Candidate] = []
    cursor: tuple[int, str] | None = None
    while len(out) < excess:
        entries = await ts.index_oldest(page, after=cursor, max_modified_ms=now_ms)
        if not entries:
            break
        cursor = (entries[-1][1], entries[-1][0])
        facts = await ts.session_facts([sid for sid, _ in entries])
        out += [_candidate(ts, f) for f in retention.pick_evictions(facts, excess - len(out))]
    return out


def _candidate(ts: TenantStore, facts: retention.SessionFacts) -> Candidate:
    return Candidate(ts.tenant_id, facts.session_id, facts.modified_ms, facts.infinite)


# --- process -------------------------------------------------------------------------------------
class Cleanup:
    """Deletes (or exports, then deletes) selected sessions one at a time."""

    def __init__(
        self,
        store: Store,
        options: Options | None = None,
        *,
        stop: asyncio.Event | None = None,
        on_result: Callable[[SessionResult], None] | None = None,
    ) -> None:
        self.store = store
        self.options = options or Options()
        self.stop = stop or asyncio.Event()
        self.on_result = on_result

    async def process(self, candidates: Sequence[Candidate]) -> Report:
        report = Report(dry_run=self.options.dry_run, selected=len(candidates))
        failures_in_row = 0
        for cand in candidates:
            if self.stop.is_set():
                report.interrupted = True
                break
            result = await self._one(self.store.tenant(cand.tenant), cand)
            if result is None:  # interrupted mid-export: the session is kept, nothing written
                report.interrupted = True
                break
            report.results.append(result)
            if self.on_result is not None:
                self.on_result(result)
            failures_in_row = failures_in_row + 1 if result.outcome is Outcome.FAILED else 0
            if failures_in_row >= MAX_CONSECUTIVE_FAILURES:
                report.stopped_reason = f"{failures_in_row} sessions in a row failed"
                break
        return report.finish()

    async def _one(self, ts: TenantStore, cand: Candidate) -> SessionResult | None:
        def result(outcome: Outcome, **extra: Any) -> SessionResult:
            return SessionResult(cand.tenant, cand.session_id, outcome, **extra)

        if self.options.dry_run:
            return result(Outcome.WOULD_DELETE)
        exported: Path | None = None
        if self.options.export_dir is not None:
            try:
                info = await ts.get(cand.session_id)
                if info.modified_ms != cand.modified_ms:
                    return result(Outcome.SKIPPED_CHANGED)
                path = export_path(
                    self.options.export_dir,
                    cand.tenant,
                    cand.session_id,
                    compress=self.options.gzip,
                )
                exported = await export_session(ts, info, path, should_stop=self.stop.is_set)
            except SessionNotFound:
                return result(Outcome.SKIPPED_GONE)
            except (ServiceError, OSError) as exc:
                return result(Outcome.FAILED, error=f"export failed: {exc}")
            if exported is None:
                return None
        try:
            deleted = await ts.delete(cand.session_id, if_modified_ms=cand.modified_ms)
        except SessionNotFound:
            await self._discard(exported)
            return result(Outcome.SKIPPED_GONE)
        except ServiceError as exc:
            # The delete may or may not have happened: keep the export either way.
            return result(Outcome.FAILED, export=_str(exported), error=f"delete failed: {exc}")
        if not deleted:
            await self._discard(exported)
            return result(Outcome.SKIPPED_CHANGED)
        return result(Outcome.DELETED, export=_str(exported))

    @staticmethod
    async def _discard(path: Path | None) -> None:
        if path is not None:
            await asyncio.to_thread(discard, path)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


async def run_cleanup(
    store: Store,
    tenants: Sequence[str],
    filt: Filter,
    *,
    options: Options | None = None,
    limit: int | None = None,
    now_ms: int | None = None,
    stop: asyncio.Event | None = None,
    on_result: Callable[[SessionResult], None] | None = None,
) -> Report:
    """Select in every tenant (in order, up to ``limit`` in all), then process."""
    now = await server_time_ms(store) if now_ms is None else now_ms
    candidates: list[Candidate] = []
    for tenant in tenants:
        left = None if limit is None else limit - len(candidates)
        if left is not None and left <= 0:
            break
        candidates += await select_matching(store.tenant(tenant), filt, now, limit=left, stop=stop)
    return await Cleanup(store, options, stop=stop, on_result=on_result).process(candidates)


async def apply_retention(store: Store, tenant: Tenant, *, now_ms: int | None = None) -> Report:
    """A tenant's retention rules, in turn: max age, max idle, then max sessions. Never touches an
    infinite session; deletions emit ``session.deleted`` like any cleanup."""
    rules = tenant.retention
    now = await server_time_ms(store) if now_ms is None else now_ms
    ts = store.tenant(tenant.id)
    cleanup = Cleanup(store)
    report = Report()
    passes = []
    if rules.max_age_seconds is not None:
        passes.append(Filter(older_than=rules.max_age_seconds))
    if rules.max_idle_seconds is not None:
        passes.append(Filter(idle_for=rules.max_idle_seconds))
    for filt in passes:
        report.merge(await cleanup.process(await select_matching(ts, filt, now)))
    if rules.max_sessions is not None:
        report.merge(await cleanup.process(await select_evictions(ts, rules.max_sessions, now)))
    return report.finish()


def log_result(result: SessionResult) -> None:
    """One structured log line per session (the non-interactive progress)."""
    level = log.warning if result.outcome is Outcome.FAILED else log.info
    level(
        "cleanup.session",
        tenant=result.tenant,
        session_id=result.session_id,
        outcome=result.outcome.value,
        export=result.export,
        error=result.error,
    )
