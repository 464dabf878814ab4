"""When to try a request again, and for how long: pure decisions, shared by both clients.

- A request that never left this process (connection refused, connect or pool timeout) is
  retried whatever it is.
- Other connection failures and the answers of a service that is down or rolling (502, 503,
  504, what ingresses answer while pods restart) are retried for repeatable calls only: GET, PUT,
  DELETE, and sends, which carry an ``Idempotency-Key`` so a repeated send is stored once.
- 429 is retried for any call: the rate limiter refused it before anything was done. Not a
  full quota's 429 (``"limit": "sessions"`` or ``"bookmarks"``): it lasts until a delete.
- The wait is ``Retry-After`` when the answer carries one, else exponential backoff with jitter.
- Every call has an overall deadline: no try starts, and no wait is begun, that would end after
  it. ``max_retries`` bounds the number of retries as well. A retry of an error answer that the
  deadline cuts short fails with that answer (its 503, say), not a bare timeout, unless the
  retry may have been carried out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

import httpx

BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
RETRY_STATUSES = frozenset({502, 503, 504})
# Errors raised before the request left this process: always safe to repeat.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def backoff_seconds(attempt: int) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
    delay: float = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    return delay * random.uniform(0.75, 1.25)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None when absent or
    unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


class Attempts:
    """The tries of one call: whether another may follow, after how long, and the time left
    before the call's deadline (``deadline`` seconds from now; None for none)."""

    def __init__(
        self,
        *,
        repeatable: bool,
        max_retries: int,
        deadline: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repeatable = repeatable
        self.max_retries = max_retries
        self.retries = 0
        self.cut = False  # the last try's timeout was cut to the time left
        self._clock = clock
        self._ends = None if deadline is None else clock() + deadline

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never below 0), None without a deadline."""
        return None if self._ends is None else max(0.0, self._ends - self._clock())

    def timeout(self, per_try: float) -> float:
        """The timeout of the next try: ``per_try``, cut to the time left."""
        left = self.remaining()
        self.cut = left is not None and left < per_try
        return per_try if left is None else max(0.001, min(per_try, left))

    def cut_short(self, exc: Exception) -> bool:
        """Whether ``exc`` timed out a try whose timeout the deadline cut, of a call that the
        answer before it may stand for: a repeatable one, or one never sent (a try that may
        have been carried out leaves the outcome unknown, which no earlier answer tells)."""
        timed_out = isinstance(exc, httpx.TimeoutException)
        return self.cut and timed_out and (self.repeatable or isinstance(exc, NOT_SENT))

    def after_error(self, exc: Exception) -> float | None:
        """The wait before the next try after a transport error; None: give up."""
        if not (self.repeatable or isinstance(exc, NOT_SENT)):
            return None
        return self._next(backoff_seconds(self.retries))

    def after_status(self, status: int, headers: Mapping[str, str]) -> float | None:
        """The wait before the next try after an error status; None: give up."""
        if status != 429 and not (status in RETRY_STATUSES and self.repeatable):
            return None
        hinted = retry_after_seconds(headers)
        return self._next(backoff_seconds(self.retries) if hinted is None else hinted)

    def _next(self, wait: float) -> float | None:
        if self.retries >= self.max_retries:
            return None
        left = self.remaining()
        if left is not None and wait >= left:
            return None  # the answer would come after the deadline: report the error now
        self.retries += 1
        return wait
