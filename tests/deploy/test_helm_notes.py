"""The chart's NOTES.txt, rendered through a copy of the chart (`helm template` skips NOTES)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="module")
def notes_chart(chart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that renders NOTES.txt into a ConfigMap: `helm template` skips NOTES."""
    copy = tmp_path_factory.mktemp("notes") / "redis-sessions"
    shutil.copytree(chart_dir, copy)
    (copy / "templates" / "NOTES.txt").rename(copy / "notes-source.txt")
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n"
        '  NOTES.txt: {{ tpl (.Files.Get "notes-source.txt") . | toJson }}\n',
        encoding="utf-8",
    )
    return copy


def render_notes(helm_run: Any, chart: Path, *args: str) -> str:
    result = helm_run(
        "template", "sessions", str(chart), "--namespace", "sessions-ns",
        "--show-only", "templates/zz-notes.yaml", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes: str = yaml.safe_load(result.stdout)["data"]["NOTES.txt"]
    return notes


def test_notes_explain_the_secret_to_create(helm_run: Any, notes_chart: Path) -> None:
    notes = render_notes(helm_run, notes_chart)
    assert "kubectl -n sessions-ns create secret generic sessions-redis-sessions" in notes
    assert "--from-literal=redis-url=" in notes and "--from-literal=admin-key=" in notes
    assert "sessionctl cleanup --idle-for 30d --json" in notes
    assert "WARNING" not in notes


def test_notes_of_production_values(
    helm_run: Any, notes_chart: Path, production_values: Path
) -> None:
    notes = render_notes(helm_run, notes_chart, "--values", str(production_values))
    assert "create secret generic sessions-secrets" in notes
    assert "--from-literal=openai-api-key=" in notes
    assert "https://sessions.example.com" in notes


def test_notes_warn_about_trial_settings(helm_run: Any, notes_chart: Path) -> None:
    notes = render_notes(
        helm_run, notes_chart,
        "--set", "bundledRedis.enabled=true,secrets.create=true",
        "--set-string", "secrets.values.adminKey=trial-admin-key",
    )  # fmt: skip
    assert notes.count("WARNING") == 2
    assert "trial-admin-key" not in notes
