"""The token budget of a turn: windows per model and tenant, and calibration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.config import Settings
from service.errors import ProviderError
from service.models import session_info_from_hash
from service.runtime import Runtime
from workers.budget import (
    MAX_RATIO,
    MIN_RATIO,
    Budget,
    calibration_counters,
    calibration_ratio,
    context_window,
    turn_budget,
    window_for,
)
from workers.context import Context
from workers.overflow import SHRINK, Fitted, _measure, fitted_counters
from workers.providers import ChatMessage, Completion, Role, Usage

TABLE = {"gpt-4o": 128_000, "gpt-4o-mini": 64_000, "gpt-4": 8192, "llama3": 8192}


def test_a_model_takes_its_own_entry_or_the_longest_prefix() -> None:
    assert window_for("gpt-4o", TABLE) == 128_000
    assert window_for("gpt-4o-mini-2024-07-18", TABLE) == 64_000
    assert window_for("gpt-4o-2024-08-06", TABLE) == 128_000
    assert window_for("gpt-4-turbo", TABLE) == 8192
    assert window_for("claude", TABLE) is None


def test_tenant_table_over_deployment_table_over_default() -> None:
    tenant = {"llama3": 131_072}
    assert context_window("llama3.1", tenant, TABLE, 4096) == 131_072
    assert context_window("gpt-4o", tenant, TABLE, 4096) == 128_000
    assert context_window("mistral", tenant, TABLE, 4096) == 4096
    # a tenant's prefix entry wins over the deployment's exact one
    assert context_window("gpt-4o", {"gpt": 16_000}, TABLE, 4096) == 16_000


def test_calibration_ratio_is_bounded_and_neutral_until_known() -> None:
    assert calibration_ratio(0, 0) == 1.0
    assert calibration_ratio(120, 100) == 1.2
    assert calibration_ratio(1000, 10) == MAX_RATIO
    assert calibration_ratio(1, 1000) == MIN_RATIO


@given(st.integers(256, 2_000_000), st.floats(MIN_RATIO, MAX_RATIO), st.floats(0.05, 1.0))
def test_calibrated_budget_fits_the_window(window: int, ratio: float, threshold: float) -> None:
    budget = Budget(window, ratio)
    # a context cut at the budget is, in real tokens, within the threshold of the window
    assert budget.context_tokens(threshold) * ratio <= window * threshold + 1e-6 * window


def test_counters_only_with_reported_usage() -> None:
    assert calibration_counters(None, 100) == {}
    assert calibration_counters(Usage(0, 5), 100) == {}
    assert calibration_counters(Usage(130, 5), 100) == {
        "calib_reported": 130,
        "calib_estimated": 100,
    }


def test_session_hash_carries_the_calibration() -> None:
    raw = {"id": "s", "created": "1", "calib_reported": "300", "calib_estimated": "200"}
    info = session_info_from_hash(raw)
    assert (info.calib_reported, info.calib_estimated) == (300, 200)
    assert "calib_reported" not in info.model_dump()  # not part of the public view


def context(tokens: int) -> Context:
    return Context([ChatMessage(Role.USER, "x")], tokens, tokens, 0)


def test_overflow_with_sizes_measures_the_second_try() -> None:
    error = ProviderError("too long", kind="context_length_exceeded")
    error.extra |= {"prompt_tokens": 9000, "context_window": 8192}
    learned, target = _measure(error, context(6000), Budget(128_000, 1.0), 0.8)
    assert learned == (9000, 6000)
    # the server's window, at the learned 1.5 real tokens per estimated token
    assert target == int(8192 * 0.8 / 1.5)
    fitted = Fitted(Completion("ok", "m", Usage(3000, 10)), context(2000), learned)
    assert fitted_counters(fitted) == {"calib_reported": 12000, "calib_estimated": 8000}


def test_overflow_without_sizes_halves_the_prompt() -> None:
    error = ProviderError("too long", kind="context_length_exceeded")
    learned, target = _measure(error, context(6000), Budget(8192, 1.0), 0.8)
    assert learned is None
    assert target == int(6000 * SHRINK)


async def test_turn_budget_reads_the_tenant_windows(runtime: Runtime) -> None:
    settings = Settings(model_context_windows="gpt-4o=128000", model_context_tokens=4096)
    ctx = {"settings": settings, "runtime": runtime}
    await runtime.tenants.create("acme", context_windows={"gpt-4o-mini": 32_000})
    raw = {"id": "s", "created": "1", "calib_reported": "150", "calib_estimated": "100"}

    async def window(model: str, tenant: str = "acme") -> Budget:
        return await turn_budget(ctx, tenant, session_info_from_hash(raw | {"model": model}))

    assert await window("gpt-4o-mini-2024") == Budget(32_000, 1.5)
    assert await window("gpt-4o") == Budget(128_000, 1.5)
    assert await window("other") == Budget(4096, 1.5)
    assert await window("gpt-4o-mini", tenant="nobody") == Budget(128_000, 1.5)


@pytest.mark.parametrize("text", ["a=1", "a", '{"a": [1]}', "a=300,a=400", "=300"])
def test_bad_window_tables_are_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="model_context_windows"):
        Settings(model_context_windows=text)
