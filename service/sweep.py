"""The expiry sweep: keeps each tenant's index exact after Redis expired sessions, and announces
each expiry once on the lifecycle stream.

Redis deletes an expired session's keys by itself (every key carries the same TTL). What it
cannot do is remove the session from the tenant's index zsets or tell anyone. The sweep reads only
the expiry-ordered index (``exp``: session id by deadline) from the earliest deadline up to now, so
its cost grows with the number of sessions that expired since the last sweep, not with the
number of sessions. For each entry ``TenantStore.sweep_session`` confirms the session is gone,
removes leftovers and index entries, and emits ``session.expired``, exactly once even when sweeps
overlap. Listing never shows an expired session even before the sweep has run. The sweep also
trims each tenant's live window to its time exactly, so live copies of events (of deleted
sessions and cleared items too) outlive the window by one sweep interval at most.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.cleanup import server_time_ms
from service.errors import StoreUnavailable
from service.logging import get_logger
from service.store import Store, TenantStore

log = get_logger("service.sweep")
SWEEP_BATCH = 500
SWEEP_CONCURRENCY = 16
REPAIR_SLICE = 2_000  # index entries the repair pass checks per tenant and sweep (Cluster)


@dataclass
class SweepReport:
    swept: Counter[str] = field(default_factory=Counter)  # tenant -> sessions swept
    alive: int = 0  # entries past their deadline whose session still exists (left in place)
    gone: int = 0  # already swept or deleted by someone else
    repaired: int = 0  # Cluster: index entries of sessions gone, removed by the repair slice
    trimmed: int = 0  # live entries past the live window, dropped
    duration_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.swept.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "swept": self.total,
            "tenants": dict(sorted(self.swept.items())),
            "alive": self.alive,
            "gone": self.gone,
            "repaired": self.repaired,
            "trimmed": self.trimmed,
            "duration_s": self.duration_s,
        }


async def sweep_tenant(
    ts: TenantStore,
    now_ms: int,
    report: SweepReport,
    *,
    batch: int = SWEEP_BATCH,
    concurrency: int = SWEEP_CONCURRENCY,
    repair: int = REPAIR_SLICE,
) -> None:
    """Sweep one tenant's entries whose deadline is at or before ``now_ms``, batch by batch."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session_id: str) -> str:
        async with gate:
            return await ts.sweep_session(session_id)

    cursor: tuple[int, str] | None = None
    while True:
        entries = await ts.expired_after(now_ms, batch, after=cursor)
        if not entries:
            break
        cursor = (entries[-1][1], entries[-1][0])
        for outcome in await asyncio.gather(*(one(sid) for sid, _ in entries)):
            if outcome == "swept":
                report.swept[ts.tenant_id] += 1
            elif outcome == "alive":
                # Left in place; a Cluster's index can lag behind a session's own keys. The
                # session's next write, or a later sweep, settles it.
                report.alive += 1
            else:
                report.gone += 1
    if ts.cluster:
        # A Cluster's index is updated after each session script and can miss an update; a
        # slice of the repair pass per sweep walks the whole index over time.
        store = ts.store
        counts = await ts.repair_index(after=store.repair_cursors.get(ts.tenant_id), budget=repair)
        store.repair_cursors[ts.tenant_id] = counts.cursor
        report.swept[ts.tenant_id] += counts.expired
        report.repaired += counts.removed


async def sweep_expired(
    store: Store,
    tenants: Iterable[str],
    *,
    now_ms: int | None = None,
    batch: int = SWEEP_BATCH,
    concurrency: int = SWEEP_CONCURRENCY,
) -> SweepReport:
    """Sweep every tenant in ``tenants`` up to ``now_ms`` (default: the server's clock)."""
    started = time.monotonic()
    now = await server_time_ms(store) if now_ms is None else now_ms
    report = SweepReport()
    for tenant in tenants:
        await sweep_tenant(store.tenant(tenant), now, report, batch=batch, concurrency=concurrency)
        try:
            report.trimmed += await store.tenant(tenant).trim_live_window(now)
        except StoreUnavailable as exc:  # the next sweep trims it; the others still get theirs
            log.warning("sweep.trim_failed", tenant=tenant, error=exc.detail)
    report.duration_s = round(time.monotonic() - started, 4)
    return report
