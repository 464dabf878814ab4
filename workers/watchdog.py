"""The watchdog: no accepted prompt is stranded, whatever happened to the job that held it.

A turn can be left pending with no job to answer it: its worker was killed (the lease expires,
but arq re-runs the job only after its timeout), Redis failed longer than a job's retries, the
queue write after the append failed, or a job was lost with a queue Redis. Every
``watchdog_interval_seconds`` one worker (an arq cron tick runs once across workers) walks the
tenants' pending-turn registries (``service.pending``) for sessions registered more than
``STRANDED_AFTER_S`` ago. A session with pending turns and no live lease gets a new turn job,
and its entry's time is moved to now, so it gets no second one before as long again. A session
without pending turns leaves the registry. A session whose lease is live is being answered: its
entry's time moves so that it is looked at again once the lease could have expired, which keeps
sessions answered at length (more than a ``BATCH`` of them) from hiding the stranded ones behind
them at the head of the registry.

A dead holder's turn therefore continues after its lease expires (``LEASE_S``) plus at most one
tick; a turn whose job is merely queued behind a backlog for longer may get a second job, which
finds the lease taken or nothing pending and ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import ServiceError
from service.logging import get_logger
from service.runtime import Runtime
from workers.lease import LEASE_S
from workers.queue import TurnQueue

log = get_logger("workers.watchdog")
STRANDED_AFTER_S = LEASE_S  # a registered session left unanswered this long is looked at
BATCH = 200  # registry entries read per tenant per tick


@dataclass
class WatchReport:
    looked_at: int = 0
    rescued: int = 0
    settled: int = 0
    failures: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "looked_at": self.looked_at,
            "rescued": self.rescued,
            "settled": self.settled,
            "failures": self.failures,
        }


async def watch(
    runtime: Runtime,
    queue: TurnQueue,
    tenants: list[str],
    *,
    stranded_after_s: float = STRANDED_AFTER_S,
) -> WatchReport:
    """One pass over ``tenants``; a failure on one session is counted and the pass goes on."""
    report = WatchReport()
    now = await runtime.store.server_time_ms()
    cutoff = now - int(stranded_after_s * 1000)
    for tenant in tenants:
        registry = runtime.store.pending(tenant)
        store = runtime.store.tenant(tenant)
        for entry in await registry.older_than(cutoff, BATCH):
            report.looked_at += 1
            try:
                state = await store.turn_state(entry.session_id)
                if not state.exists or not state.pending:
                    report.settled += await registry.prune(entry)
                elif not state.lease_live:
                    await registry.bump(entry.session_id)
                    await queue.enqueue_rescue(tenant, entry.session_id, state.oldest, now)
                    report.rescued += 1
                    log.warning(
                        "watchdog.rescued",
                        tenant=tenant,
                        session=entry.session_id,
                        turn=state.oldest,
                        pending=state.pending,
                    )
                else:  # being answered: look again when the lease could have expired
                    wait_ms = int(stranded_after_s * 1000)
                    await registry.bump(entry.session_id, state.lease_expiry_ms - wait_ms)
            except ServiceError as exc:
                report.failures += 1
                log.warning(
                    "watchdog.failed", tenant=tenant, session=entry.session_id, error=exc.detail
                )
    return report


async def watchdog_job(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron job: one watchdog pass over every tenant."""
    runtime: Runtime = ctx["runtime"]
    tenants = [t.id for t in await runtime.tenants.all()]
    report = await watch(runtime, ctx["queue"], tenants)
    return report.to_json()
