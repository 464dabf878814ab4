"""How many tokens a turn's context may use: the model's window and the session's calibration.

Window: the tenant's ``context_windows`` entry for the model, else the deployment's
``SESSIONS_MODEL_CONTEXT_WINDOWS`` entry, else ``SESSIONS_MODEL_CONTEXT_TOKENS``. A model takes
the entry of its own name, or the longest entry its name starts with (``gpt-4o`` covers
``gpt-4o-2024-08-06``).

Calibration: ``workers/tokens.py`` estimates offline; the provider reports the real
``prompt_tokens`` of what it was sent. Every completed turn with reported usage adds the reported
count and the estimate of the same prompt to two counters of the session (``calib_reported``,
``calib_estimated``, in the same script that appends the reply), and an overflow answer that names
the prompt's size does the same. Their ratio, bounded to ``[MIN_RATIO, MAX_RATIO]``, scales every
later estimate of the session: the context is cut at ``window * threshold / ratio`` estimated
tokens. A session without reported usage keeps the ratio 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.config import Settings
from service.errors import TenantNotFound
from service.models import SessionInfo
from workers.providers import Usage

MIN_RATIO = 0.5
MAX_RATIO = 4.0
REPORTED, ESTIMATED = "calib_reported", "calib_estimated"


def window_for(model: str, windows: Mapping[str, int]) -> int | None:
    """The entry of ``model`` in ``windows``: its own name, else the longest prefix of it."""
    if model in windows:
        return windows[model]
    prefixes = [name for name in windows if model.startswith(name)]
    return windows[max(prefixes, key=len)] if prefixes else None


def context_window(
    model: str, tenant: Mapping[str, int], deployment: Mapping[str, int], default: int
) -> int:
    """The context window of ``model``: the tenant's table, the deployment's, then ``default``."""
    for table in (tenant, deployment):
        found = window_for(model, table)
        if found is not None:
            return found
    return default


def calibration_ratio(reported: int, estimated: int) -> float:
    """Reported prompt tokens per estimated token, bounded; 1.0 until something is known."""
    if reported <= 0 or estimated <= 0:
        return 1.0
    return min(max(reported / estimated, MIN_RATIO), MAX_RATIO)


@dataclass(frozen=True, slots=True)
class Budget:
    """The token budget of one turn."""

    window: int  # the model's context window, in real tokens
    ratio: float  # real tokens per estimated token, for this session

    def context_tokens(self, threshold: float) -> int:
        """Estimated tokens the context may use: ``threshold`` of the window, calibrated."""
        return max(1, int(self.window * threshold / self.ratio))

    def real(self, estimated: int) -> int:
        """An estimate in the provider's tokens."""
        return round(estimated * self.ratio)


def calibration_counters(usage: Usage | None, estimated: int) -> dict[str, int]:
    """The session counters a completed turn adds: its reported prompt and its estimate."""
    if usage is None or usage.prompt_tokens <= 0 or estimated <= 0:
        return {}
    return {REPORTED: usage.prompt_tokens, ESTIMATED: estimated}


async def turn_budget(ctx: dict[str, Any], tenant_id: str, info: SessionInfo) -> Budget:
    """The budget of a turn of the session ``info`` (one read of the tenant record)."""
    settings: Settings = ctx["settings"]
    try:
        tenant_windows = (await ctx["runtime"].tenants.get(tenant_id)).context_windows
    except TenantNotFound:  # sessions of tenants made without the registry (dev, tests)
        tenant_windows = {}
    window = context_window(
        info.model or settings.default_model,
        tenant_windows,
        _deployment_windows(settings),
        settings.model_context_tokens,
    )
    return Budget(window, calibration_ratio(info.calib_reported, info.calib_estimated))


_parsed: dict[str, dict[str, int]] = {}


def _deployment_windows(settings: Settings) -> dict[str, int]:
    """``settings.context_windows()``, parsed once per distinct setting."""
    text = settings.model_context_windows
    if text not in _parsed:
        _parsed[text] = settings.context_windows()
    return _parsed[text]
