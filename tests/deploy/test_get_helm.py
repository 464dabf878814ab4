"""scripts/get_helm.sh: reuses the cached binary without asking the registry again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def test_second_run_reuses_the_cached_binary(helm: str, repo_root: Path, tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "npm-was-called"
    fake_npm = fake_bin / "npm"
    fake_npm.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n", encoding="utf-8")
    fake_npm.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["HELM_CACHE_DIR"] = str(Path(helm).parent)
    result = subprocess.run(
        ["bash", str(repo_root / "scripts" / "get_helm.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == helm
    assert not marker.exists(), "the registry was asked again although helm is cached"


def test_helm_is_version_3_17(helm: str) -> None:
    result = subprocess.run(
        [helm, "version", "--template", "{{ .Version }}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if not result.stdout.startswith("v3.17."):
        pytest.fail(f"expected helm v3.17.x, got {result.stdout!r}")
