"""Request limits kept in Redis, so they hold across every API replica.

- Per-tenant request rate: a fixed-window counter (``INCR`` + ``PEXPIRE`` in one script) on the
  tenant's quota key. A rate of ``r`` requests per second becomes ``limit`` requests per window
  (``window_for``): one second for ``r >= 1``, longer windows for fractional rates, so 0.2/s allows
  one request per five seconds. 0 switches the limit off.
- API key failures per client IP: after ``AUTH_FAILURES_PER_WINDOW`` refused keys within
  ``AUTH_FAILURE_WINDOW_MS``, every further *invalid* key from that address is refused with 429
  until the window ends, so keys cannot be tried at speed. A valid key is never refused by this
  limit: behind a load balancer many clients share one address, and one client's failures must
  not lock the others out (keys carry 256 random bits, so confirming a lucky guess gives nothing
  away). The counter lives in the tenant registry's slot, so one script reads it with the tenant
  record of the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Awaitable
from typing import Any, cast

from service import keys as K
from service.connections import LuaScript, RedisClient, store_errors
from service.errors import LimitExceeded, StoreFull, Unauthorized
from service.metrics import Metrics
from service.tenants import Tenant, TenantRegistry, tenant_of_key

AUTH_FAILURES_PER_WINDOW = 20
MAX_WINDOW_MS = 86_400_000  # a rate below one request a day allows one a day
AUTH_FAILURE_WINDOW_MS = 60_000
_CLIENT_ADDRESS = re.compile(r"[0-9A-Fa-f.:]{1,45}")

WINDOW_COUNT = """
-- Count one request in a fixed window.
-- KEYS[1]: the counter (a string holding an integer; expires when its window ends)
-- ARGV[1]: window length in ms
-- Returns {count in this window, ms until the window ends}.
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

WINDOW_READ = """
-- Read a window counter without counting, and a hash field beside it (in the same slot).
-- KEYS[1]: the counter, KEYS[2]: the hash.  ARGV[1]: the field ('' reads nothing).
-- Returns {count in this window (0 when none), ms until the window ends (0 when none), the
-- field's value (left out when there is none)}.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = 0
if n > 0 then
  ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = 0 end
end
local value = false
if ARGV[1] ~= '' then value = redis.call('HGET', KEYS[2], ARGV[1]) end
return {n, ttl, value}
"""


def window_for(rate_per_second: float) -> tuple[int, int]:
    """``(requests allowed, window ms)`` for a rate; (0, 0) when the rate is off (<= 0). Windows
    last at most ``MAX_WINDOW_MS`` (a window of ages would overflow Redis' expiry)."""
    if rate_per_second <= 0:
        return 0, 0
    if rate_per_second >= 1:
        return math.floor(rate_per_second), 1000
    return 1, min(math.ceil(1000 / rate_per_second), MAX_WINDOW_MS)


def retry_after_seconds(ms_left: int) -> int:
    """The ``Retry-After`` value for a window with ``ms_left`` to go: whole seconds, at least 1."""
    return max(1, math.ceil(ms_left / 1000))


def client_address(host: str | None) -> str:
    """The address a failure counter is kept under: IPv4/IPv6 text, anything else ``unknown``."""
    if host is None or _CLIENT_ADDRESS.fullmatch(host) is None:
        return "unknown"
    return host


def auth_failures_key(prefix: str, address: str) -> str:
    """The failure counter of a client address (``P:_tenants:{admin}:failures:<address>``)."""
    return K.auth_failures_key(prefix, client_address(address))


class RequestLimits:
    """Both limiters, on the data Redis (their scripts registered once per process)."""

    def __init__(self, redis: RedisClient, prefix: str, metrics: Metrics | None = None) -> None:
        self._redis: Any = cast(Any, redis)
        self._prefix = prefix
        self._metrics = metrics
        self._count = LuaScript(self._redis, WINDOW_COUNT)
        self._read = LuaScript(self._redis, WINDOW_READ)

    async def hit_tenant(self, tenant_id: str, rate_per_second: float) -> None:
        """Count a request of ``tenant_id``; ``LimitExceeded`` when it is over its rate."""
        limit, window_ms = window_for(rate_per_second)
        if limit == 0:
            return
        key = K.quota_key(self._prefix, tenant_id)
        try:
            with store_errors("count a request"):
                count, ms_left = await self._count(keys=[key], args=[window_ms])
        except StoreFull:
            # Redis is out of memory and refuses the counter's write. The request goes through
            # uncounted, so reads keep working; its own writes are refused (507) anyway.
            return
        if int(count) > limit:
            self._refused("requests")
            raise LimitExceeded(
                f"request rate over the limit of {rate_per_second:g} per second",
                retry_after=retry_after_seconds(int(ms_left)),
                limit="requests",
            )

    async def authenticate(
        self, address: str | None, api_key: str, tenants: TenantRegistry
    ) -> Tenant:
        """The tenant of ``api_key``. A key that is not valid now is ``Unauthorized`` and counted
        against ``address`` (``record_auth_failure``), or ``LimitExceeded`` once ``address`` has
        failed too often; a valid key passes whatever the counter says. One round trip: the
        failure counter and the tenant record the key names are read by one script."""
        tenant_id = tenant_of_key(api_key)
        key = auth_failures_key(self._prefix, address or "unknown")
        with store_errors("check an API key"):
            reply = await self._read(keys=[key, tenants.records_key], args=[tenant_id or ""])
        try:
            if tenant_id is None:
                raise Unauthorized("API key is malformed")
            return tenants.verify(api_key, reply[2] if len(reply) > 2 else None)
        except Unauthorized:
            self._check_failures(int(reply[0]), int(reply[1]))
            raise

    async def guard_auth(self, address: str | None, check: Awaitable[bool]) -> bool:
        """Run a key check (true for a valid key); a failed check is refused with 429 when
        ``address`` has failed too often, a passed one never. The counter is read alongside the
        check, so it adds no round trip."""
        key = auth_failures_key(self._prefix, address or "unknown")
        counter, result = await asyncio.gather(self._failures(key), check, return_exceptions=True)
        if isinstance(result, BaseException):
            raise result
        if result:
            return True
        if isinstance(counter, BaseException):
            raise counter
        self._check_failures(*counter)
        return False

    def _check_failures(self, failures: int, ms_left: int) -> None:
        if failures >= AUTH_FAILURES_PER_WINDOW:
            self._refused("auth_failures")
            raise LimitExceeded(
                "too many requests with invalid API keys from this address",
                retry_after=retry_after_seconds(ms_left),
                limit="auth_failures",
            )

    async def _failures(self, key: str) -> tuple[int, int]:
        with store_errors("read the key failure counter"):
            reply = await self._read(keys=[key, key], args=[""])
        return int(reply[0]), int(reply[1])

    def _refused(self, limit: str) -> None:
        if self._metrics is not None:
            self._metrics.rate_limited.labels(limit).inc()

    async def record_auth_failure(self, address: str | None) -> None:
        key = auth_failures_key(self._prefix, address or "unknown")
        # Redis out of memory: the failure goes uncounted and the key is refused all the same.
        with contextlib.suppress(StoreFull), store_errors("count a key failure"):
            await self._count(keys=[key], args=[AUTH_FAILURE_WINDOW_MS])
