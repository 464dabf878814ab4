"""Fixtures of the deployment tests: a helm binary and rendered chart manifests.

helm comes from scripts/get_helm.sh (cached under .cache/helm after the first run). When it cannot
be obtained, the tests that need it are skipped with the script's message.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "redis-sessions"
RELEASE = "sessions"
NAMESPACE = "sessions-ns"

Manifest = dict[str, Any]
HelmRunner = Callable[..., "subprocess.CompletedProcess[str]"]
Templater = Callable[..., "subprocess.CompletedProcess[str]"]
Renderer = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR


@pytest.fixture(scope="session")
def production_values() -> Path:
    return CHART_DIR / "ci" / "production-values.yaml"


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a helm v3.17 binary."""
    script = REPO_ROOT / "scripts" / "get_helm.sh"
    try:
        result = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"helm could not be obtained: scripts/get_helm.sh did not run ({exc})")
    if result.returncode != 0:
        pytest.skip(
            "helm could not be obtained: scripts/get_helm.sh exited with "
            f"{result.returncode}: {result.stderr.strip()}"
        )
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"helm could not be obtained: scripts/get_helm.sh printed {path!r}")
    return path


@pytest.fixture(scope="session")
def helm_run(helm: str) -> HelmRunner:
    """Run helm with its own config directories and no cluster."""
    home = REPO_ROOT / ".cache" / "helm-home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=os.devnull,
    )

    def _run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [helm, *args], capture_output=True, text=True, timeout=120, check=False, env=env
        )

    return _run


def nested(set_values: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: dotted keys as helm's --set reads them."""
    tree: dict[str, Any] = {}
    for dotted, value in set_values.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


@pytest.fixture(scope="session")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], Path]:
    """Write dotted-key values ({"api.replicaCount": 3}, as helm's --set reads them) to a values
    file; a file needs no escaping of commas and colons."""
    values_dir = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def _write(set_values: dict[str, Any]) -> Path:
        path = values_dir / f"values-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(nested(set_values)), encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def helm_template(helm_run: HelmRunner, values_file: Callable[[dict[str, Any]], Path]) -> Templater:
    """`helm template` of the chart with values files, then dotted-key values."""

    def _template(
        values_files: Sequence[Path] = (),
        set_values: dict[str, Any] | None = None,
        release: str = RELEASE,
    ) -> subprocess.CompletedProcess[str]:
        files = list(values_files)
        if set_values:
            files.append(values_file(set_values))
        args = ["template", release, str(CHART_DIR), "--namespace", NAMESPACE]
        for path in files:
            args += ["--values", str(path)]
        return helm_run(*args)

    return _template


@pytest.fixture(scope="session")
def render(helm_template: Templater) -> Renderer:
    """Render the chart and return its objects; results are cached per argument set."""
    cache: dict[str, list[Manifest]] = {}

    def _render(
        values_files: Sequence[Path] = (),
        set_values: dict[str, Any] | None = None,
        release: str = RELEASE,
    ) -> list[Manifest]:
        key = repr((tuple(map(str, values_files)), sorted((set_values or {}).items()), release))
        if key not in cache:
            result = helm_template(values_files, set_values, release)
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def default_objects(render: Renderer) -> list[Manifest]:
    return render()


@pytest.fixture(scope="session")
def production_objects(render: Renderer, production_values: Path) -> list[Manifest]:
    return render([production_values])
