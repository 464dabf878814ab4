"""The per-session turn lease: one worker answers a session's turns at a time.

The lease is the session's metadata field ``lease`` (the ``lease`` script), with a short expiry
that a keeper task renews every third of it. A renewal that fails because Redis is unreachable is
tried again and again: the lease is not lost by that, since only another worker that takes it
over after it expired makes it so, and the store refuses every turn write that names a token no
longer holding it. Once a renewal answers that the lease was taken over, the keeper cancels the
holder's work in progress (``fenced``): its provider call stops and it writes nothing more.

Its token names the holder (``host:pid:random``), so an operator can tell which worker holds a
session. A crashed holder's lease expires after ``LEASE_S``; the watchdog then hands the turn on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator

from service.errors import ServiceError, SessionNotFound
from service.logging import get_logger
from service.store import TenantStore
from workers import metrics

log = get_logger("workers.lease")
HOST = socket.gethostname()
LEASE_S = 6.0  # a dead holder's turns wait this long, plus a watchdog tick, before moving on
RENEW_RETRY_S = 0.25  # pause between renewals tried while Redis does not answer


class LeaseLost(Exception):
    """Another worker took the session's lease over: this one must stop its turn."""


class SessionLease:
    """The lease of one session for one job; ``hold()`` may be entered again after leaving."""

    def __init__(self, store: TenantStore, session_id: str, lease_s: float = LEASE_S) -> None:
        self._store = store
        self._session_id = session_id
        self._lease_s = lease_s
        self.token = f"{HOST}:{os.getpid()}:{secrets.token_hex(8)}"
        self._lost = False
        self._victim: asyncio.Task[object] | None = None

    @property
    def lost(self) -> bool:
        return self._lost

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        """Take the lease (False: another worker holds it) and keep it until the block ends;
        leaving always stops the keeper and releases what is held."""
        taken = await self._store.lease(self._session_id, "take", self.token, self._ms)
        if not taken:
            yield False
            return
        if taken == 2:
            log.warning("lease.takeover", session=self._session_id, token=self.token)
            metrics.LEASE_TAKEOVERS.inc()
        self._lost = False
        keeper = asyncio.create_task(self._keep())
        try:
            yield True
        finally:
            keeper.cancel()
            await asyncio.wait([keeper])  # no renewal may land after the release
            if not self._lost:
                with contextlib.suppress(ServiceError):  # else it expires by itself
                    await self._store.lease(self._session_id, "release", self.token)

    @contextlib.asynccontextmanager
    async def fenced(self) -> AsyncIterator[None]:
        """Run the block as work under this lease: should the lease be lost meanwhile, the block
        is cancelled and ``LeaseLost`` raised in place of the cancellation."""
        if self._lost:
            raise LeaseLost
        task = asyncio.current_task()
        self._victim = task
        try:
            yield
        except asyncio.CancelledError:
            if self._lost and task is not None and task.uncancel() == 0:
                raise LeaseLost from None
            raise
        finally:
            self._victim = None

    @property
    def _ms(self) -> int:
        return int(self._lease_s * 1000)

    async def _keep(self) -> None:
        pause = self._lease_s / 3
        while True:
            await asyncio.sleep(pause)
            try:
                held = await self._store.lease(self._session_id, "renew", self.token, self._ms)
            except SessionNotFound:
                held = False
            except ServiceError as exc:
                log.warning("lease.renew_failed", session=self._session_id, error=exc.detail)
                pause = RENEW_RETRY_S
                continue
            if not held:
                log.warning("lease.lost", session=self._session_id, token=self.token)
                self._lost = True
                if self._victim is not None:
                    self._victim.cancel()
                return
            pause = self._lease_s / 3
