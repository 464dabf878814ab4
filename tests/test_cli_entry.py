"""The commands the container image and the chart run exist and explain themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.main import COMMAND_MODULES, main


@pytest.mark.parametrize("command", COMMAND_MODULES)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"sessionctl {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["serve", "worker", "cleanup"])
def test_image_entry_commands_run_as_installed(command: str) -> None:
    """What the Dockerfile, compose file and Helm chart call: the installed console script."""
    script = Path(sys.executable).with_name("sessionctl")
    done = subprocess.run(
        [str(script), command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: sessionctl" in done.stdout


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("command", ["serve", "worker", "dev"])
def test_an_invalid_setting_is_a_clear_usage_error(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No traceback: the command says which setting is wrong, and exits 2."""
    monkeypatch.setenv("SESSIONS_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SESSIONS_WORKER_POLL_DELAY_SECONDS", "soon")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert f"sessionctl {command}: error: invalid SESSIONS_* settings" in err
    assert "worker_poll_delay_seconds" in err and "Traceback" not in err
