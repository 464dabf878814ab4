"""The docs stay true: every setting is in the README table, the CI runs the README's command."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(SESSIONS_[A-Z_]+)` \|", readme, flags=re.M))
    expected = {f"SESSIONS_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_key_kind_is_in_the_architecture_doc() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    kinds = (
        "meta", "history", "events", "bookmarks", "idem", "turns", "idx", "exp", "lifecycle",
        "pending", "live",
    )  # fmt: skip
    for kind in kinds:
        assert f":{kind}`" in doc, kind
