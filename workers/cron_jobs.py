"""Periodic arq jobs: the expiry sweep and tenants' retention rules.

Each job takes ``ctx["runtime"]`` (a ``service.runtime.Runtime``) and returns a small summary that
arq logs. arq enqueues a cron job on the shared queue once per tick (``unique``), so with many
workers each tick runs on one of them; the sweep and cleanup are safe to overlap anyway.

Worker liveness is not a cron job (a cron tick runs on whichever worker takes it): every worker
writes arq's health record under its own host name (``QueueNames.health`` in ``workers.queue``).
"""

from __future__ import annotations

from typing import Any

from service.cleanup import Report, apply_retention
from service.logging import get_logger
from service.runtime import Runtime
from service.sweep import sweep_expired

log = get_logger("workers.cron")


async def sweep_expired_job(ctx: dict[str, Any]) -> dict[str, Any]:
    """Settle sessions Redis expired: index entries and leftovers go, one ``session.expired``."""
    runtime: Runtime = ctx["runtime"]
    tenants = [t.id for t in await runtime.tenants.all()]
    report = await sweep_expired(runtime.store, tenants)
    if report.total or report.alive:
        log.info("sweep.done", **report.to_json())
    return report.to_json()


async def apply_retention_job(ctx: dict[str, Any]) -> dict[str, Any]:
    """Apply every tenant's retention rules (max age, max idle, max sessions); never touches an
    infinite session."""
    runtime: Runtime = ctx["runtime"]
    total = Report()
    for tenant in await runtime.tenants.all():
        rules = tenant.retention
        if (rules.max_age_seconds, rules.max_idle_seconds, rules.max_sessions) == (None,) * 3:
            continue
        report = await apply_retention(runtime.store, tenant)
        if report.results:
            log.info("retention.applied", tenant=tenant.id, **report.counts())
        total.merge(report)
    summary = total.finish().to_json()
    return {k: summary[k] for k in ("duration_s", "counts", "tenants", "failures")}
