"""The production log format for every logger of a process, and tracing's imports staying out
of a process that does not trace. Each case runs in a fresh interpreter, configured as
``sessionctl`` configures itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from service.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, warnings
from service.config import Settings
from service.logging import bind_request, configure_logging, get_logger

configure_logging(Settings(log_format="json", log_level="INFO"))
bind_request(request_id="rid-1", tenant="acme")
get_logger("workers.turns").info("turn.done", ms=1.5)
logging.getLogger("workers.providers.openai").warning(
    "provider call failed, retrying",
    extra={"kind": "rate_limited", "detail": "HTTP 429", "attempt": 1, "delay": 0.5},
)
logging.getLogger("uvicorn.error").info(
    "Started server process [%d]", 42, extra={"color_message": "\\x1b[36m42\\x1b[0m"}
)
try:
    {}["missing"]
except KeyError:
    logging.getLogger("arq.worker").exception("job failed")
warnings.warn("something is deprecated", UserWarning, stacklevel=1)
raise RuntimeError("the end")
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_every_logger_writes_one_json_object_per_line() -> None:
    done = run_python(SCRIPT)
    assert done.returncode == 1 and done.stdout == ""
    lines: list[dict[str, Any]] = [json.loads(line) for line in done.stderr.splitlines()]
    by_event = {line["event"]: line for line in lines}
    for line in lines:
        assert {"event", "level", "logger", "timestamp"} <= line.keys(), line
        assert line["request_id"] == "rid-1" and line["tenant"] == "acme", line
    assert by_event["turn.done"]["logger"] == "workers.turns"
    retry = by_event["provider call failed, retrying"]
    assert (retry["kind"], retry["detail"], retry["attempt"], retry["delay"]) == (
        "rate_limited",
        "HTTP 429",
        1,
        0.5,
    )
    assert retry["level"] == "warning"
    started = by_event["Started server process [42]"]
    assert started["logger"] == "uvicorn.error" and "color_message" not in started
    failed = by_event["job failed"]
    assert failed["level"] == "error" and "KeyError: 'missing'" in failed["exception"]
    (warned,) = [line for line in lines if line["logger"] == "py.warnings"]
    assert "something is deprecated" in warned["event"]
    uncaught = by_event["uncaught exception"]
    assert uncaught["level"] == "critical"
    assert "RuntimeError: the end" in uncaught["exception"]
    assert len(lines) == 6


def test_without_the_otel_extra_everything_runs_untraced() -> None:
    """The base install: none of the packages the extra adds importable (blocked here; the
    OpenTelemetry API itself comes with FastAPI), tracing asked for all the same; the API and
    the worker still build, and say why they do not trace."""
    done = run_python(
        """
        import os, sys

        EXTRA = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")

        class NoOtel:
            def find_spec(self, name, path=None, target=None):
                if name.startswith(EXTRA):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoOtel())
        os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
        from service.config import Settings
        from service.logging import configure_logging
        from service.tracing import configure_tracing, span
        from service.api.main import create_app
        from workers.settings import build_worker

        settings = Settings(redis_url="redis://127.0.0.1:1/0")
        configure_logging(settings)
        assert not configure_tracing("redis-sessions-api")
        create_app(settings)
        build_worker(settings)
        with span("nothing") as current:
            assert current is None
        """
    )
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stderr.splitlines()]
    assert line["event"] == "tracing.unavailable" and "opentelemetry.sdk" in line["reason"]


def test_worker_metrics_port_must_be_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--metrics-port", "0"])
    assert exit_info.value.code == 2
    assert "--metrics-port" in capsys.readouterr().err


def test_a_taken_metrics_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a traceback: one line saying which port, and exit code 2."""
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"SESSIONS_REDIS_URL": "redis://127.0.0.1:1/0"}
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            code = main(["worker", "--metrics-port", str(port)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot serve metrics on port {port}" in err and "Traceback" not in err


DEBUG_PROVIDER = """
import asyncio, sys
from service.config import Settings
from service.logging import configure_logging
from tests.providers.fake_openai import FakeOpenAI
from workers.providers.base import ChatMessage, Role
from workers.providers.openai import OpenAIProvider

async def main():
    async with FakeOpenAI() as server:
        provider = OpenAIProvider(base_url=server.base_url, timeout_seconds=5.0)
        try:
            await provider.complete([ChatMessage(Role.USER, "a private prompt")], model="m")
        finally:
            await provider.aclose()

configure_logging(Settings(log_level="DEBUG", log_format="json", log_content=sys.argv[1] == "1"))
asyncio.run(main())
"""


@pytest.mark.parametrize("log_content", [False, True])
def test_debug_logs_carry_no_message_content_unless_asked(log_content: bool) -> None:
    """At DEBUG the OpenAI SDK logs each request's options, messages included: the content
    stays out of the log as everywhere else, unless ``SESSIONS_LOG_CONTENT`` asks for it."""
    done = subprocess.run(
        [sys.executable, "-c", DEBUG_PROVIDER, "1" if log_content else "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("a private prompt" in done.stderr) is log_content, done.stderr[-2000:]
