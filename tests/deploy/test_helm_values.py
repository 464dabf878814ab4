"""The chart's values: a self-contained strict schema, no secrets in values files, and readable
errors for bad values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from service.config import Settings

# Objects left open on purpose: values for a parent chart, and Kubernetes structures passed through.
FREE_FORM = {"/properties/global", "/definitions/kubernetesObject"}
SECRET_LIKE = re.compile(r"(password|passwd|apikey|adminkey|secret|token|credentials?)$")

# Values that must be refused, with the words the error has to contain.
BAD_VALUES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "negative-api-replicas": ({"api.replicaCount": -1}, ["api.replicaCount"]),
    "negative-worker-replicas": ({"worker.replicaCount": -2}, ["worker.replicaCount"]),
    "unknown-key-in-api": ({"api.replicas": 3}, ["api", "replicas"]),
    "unknown-key-in-worker": ({"worker.concurrency": 8}, ["worker", "concurrency"]),
    "grace-period-within-the-drain": (
        {"settings.workerDrainSeconds": 55},
        ["worker.terminationGracePeriodSeconds", "settings.workerDrainSeconds", "10 s"],
    ),
    "unknown-key-in-cleanup-filters": ({"cleanup.filters.olderthan": "30d"}, ["olderthan"]),
    "unknown-top-level-key": ({"apii": {}}, ["apii"]),
    "bad-duration": ({"cleanup.filters.idleFor": "thirty days"}, ["cleanup.filters.idleFor"]),
    "bad-schedule": ({"cleanup.schedule": "daily"}, ["cleanup.schedule"]),
    "bad-provider": ({"settings.provider": "other"}, ["settings.provider"]),
    "secret-in-extra-settings": (
        {"extraSettings.SESSIONS_ADMIN_KEY": "plain"},
        ["extraSettings", "SESSIONS_ADMIN_KEY"],
    ),
    "plain-secret-in-extra-env": (
        {"extraEnv": [{"name": "SESSIONS_OPENAI_API_KEY", "value": "plain"}]},
        ["extraEnv"],
    ),
    "cluster-without-queue-redis": ({"settings.redisCluster": True}, ["queueRedisUrl"]),
    "openai-without-key": (
        {"settings.provider": "openai", "secrets.keys.openaiApiKey": ""},
        ["openaiApiKey"],
    ),
    "no-redis-url": ({"secrets.keys.redisUrl": ""}, ["secrets.keys.redisUrl"]),
    "hpa-min-above-max": (
        {
            "api.autoscaling.enabled": True,
            "api.autoscaling.minReplicas": 5,
            "api.autoscaling.maxReplicas": 2,
        },
        ["api.autoscaling", "minReplicas"],
    ),
    "pdb-both-bounds": (
        {"worker.pdb.enabled": True, "worker.pdb.minAvailable": 1},
        ["worker.pdb", "minAvailable", "maxUnavailable"],
    ),
    "export-without-claim": ({"cleanup.export.enabled": True}, ["persistentVolumeClaim"]),
    "trial-secret-without-values": ({"secrets.create": True}, ["secrets.values"]),
    "keda-and-hpa": (
        {"worker.keda.enabled": True, "worker.autoscaling.enabled": True},
        ["worker.keda", "worker.autoscaling.enabled"],
    ),
    "keda-min-above-max": (
        {"worker.keda.enabled": True, "worker.keda.minReplicas": 9, "worker.keda.maxReplicas": 3},
        ["worker.keda", "minReplicas"],
    ),
    "service-monitor-without-metrics": (
        {"worker.serviceMonitor.enabled": True, "worker.metrics.enabled": False},
        ["worker.serviceMonitor", "worker.metrics.enabled"],
    ),
    "bad-keda-threshold": ({"worker.keda.prometheus.threshold": "many"}, ["threshold"]),
}


def secret_setting_names() -> list[str]:
    """Env names of the settings that hold a secret: every SecretStr field, and the Redis URLs
    (a URL carries its password)."""
    names = [
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
        or name.endswith("redis_url")
    ]
    return sorted(f"SESSIONS_{name.upper()}" for name in names)


SECRET_SETTINGS = secret_setting_names()


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


@pytest.fixture(scope="module")
def schema(chart_dir: Path) -> dict[str, Any]:
    with (chart_dir / "values.schema.json").open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def test_schema_is_self_contained(schema: dict[str, Any]) -> None:
    refs = [value for path, value in walk(schema) if path.endswith("/$ref")]
    assert refs, "the schema is expected to share definitions"
    remote = [ref for ref in refs if not ref.startswith("#/")]
    assert not remote, f"remote $ref: {remote}"
    definitions = schema["definitions"]
    for ref in refs:
        assert ref.removeprefix("#/definitions/") in definitions, f"dangling $ref {ref}"


def test_every_schema_block_rejects_unknown_keys(schema: dict[str, Any]) -> None:
    """Blocks with declared properties are closed; free-form maps declare what their values are."""
    open_blocks = []
    for path, node in walk(schema):
        if not isinstance(node, dict) or node.get("type") != "object":
            continue
        if "properties" in node:
            if node.get("additionalProperties") is not False:
                open_blocks.append(path)
        elif path not in FREE_FORM and not isinstance(node.get("additionalProperties"), dict):
            open_blocks.append(path)
    assert not open_blocks, f"schema blocks accepting any key: {open_blocks}"


def test_values_yaml_documents_every_schema_block(chart_dir: Path, schema: dict[str, Any]) -> None:
    """values.yaml and the schema describe the same top-level blocks."""
    values = yaml.safe_load((chart_dir / "values.yaml").read_text(encoding="utf-8"))
    declared = set(schema["properties"]) - {"global"}
    assert set(values) == declared


@pytest.mark.parametrize("values_file", ["values.yaml", "ci/production-values.yaml"])
def test_values_files_hold_no_secrets(chart_dir: Path, values_file: str) -> None:
    values = yaml.safe_load((chart_dir / values_file).read_text(encoding="utf-8"))
    secrets = values.get("secrets", {})
    assert not secrets.get("create", False), "values files must not create the Secret"
    filled = {key: value for key, value in secrets.get("values", {}).items() if value}
    assert not filled, f"secret values in {values_file}: {sorted(filled)}"
    for path, value in walk(values):
        if path.startswith("/secrets/keys/") or path == "/secrets/existingSecret":
            continue  # names of keys and of the Secret, not secret values
        leaf = re.sub(r"[-_]", "", path.rsplit("/", 1)[-1].lower())
        if SECRET_LIKE.search(leaf) and isinstance(value, str) and value:
            pytest.fail(f"{values_file}: {path} holds a value that looks like a secret")
        if isinstance(value, str):
            assert "://" not in value or "@" not in value, f"{path}: a URL with credentials"
    for path, value in walk(values):
        if isinstance(value, dict) and str(value.get("name")).upper() in SECRET_SETTINGS:
            assert "value" not in value, f"{path}: secret setting as a plain value"


def test_production_values_use_an_existing_secret(production_values: Path) -> None:
    values = yaml.safe_load(production_values.read_text(encoding="utf-8"))
    assert values["secrets"]["existingSecret"]
    for block in ("api", "worker"):
        assert values[block]["autoscaling"]["enabled"] is True
        assert values[block]["pdb"]["enabled"] is True
    assert values["api"]["ingress"]["enabled"] is True
    assert values["api"]["serviceMonitor"]["enabled"] is True


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_fail_with_a_readable_message(helm_template: Any, case: str) -> None:
    set_values, words = BAD_VALUES[case]
    result = helm_template([], set_values)
    assert result.returncode != 0, f"{case}: helm template accepted {set_values}"
    message = result.stderr
    for word in words:
        assert word in message, f"{case}: {word!r} missing from the error:\n{message}"
    assert "Traceback" not in message and "panic" not in message


@pytest.mark.parametrize("case", ["negative-api-replicas", "unknown-key-in-api"])
def test_helm_lint_rejects_bad_values(
    helm_run: Any, chart_dir: Path, values_file: Any, case: str
) -> None:
    set_values, words = BAD_VALUES[case]
    result = helm_run("lint", "--strict", str(chart_dir), "--values", str(values_file(set_values)))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for word in words:
        assert word in output, f"{word!r} missing from helm lint's output:\n{output}"


def test_secret_settings_are_known() -> None:
    """The tests below cover what the service holds as secrets; a new one is refused too."""
    assert Settings.model_config.get("case_sensitive", False) is False
    assert {
        "SESSIONS_ADMIN_KEY",
        "SESSIONS_OPENAI_API_KEY",
        "SESSIONS_REDIS_PASSWORD",
        "SESSIONS_REDIS_URL",
        "SESSIONS_QUEUE_REDIS_URL",
    } <= set(SECRET_SETTINGS)


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_extra_settings_refuse_every_secret_setting(helm_template: Any, name: str) -> None:
    result = helm_template([], {f"extraSettings.{name}": "plain"})
    assert result.returncode != 0, f"{name} accepted into the ConfigMap:\n{result.stdout}"
    assert "extraSettings" in result.stderr and name in result.stderr, result.stderr


def case_variants(name: str) -> list[str]:
    """The service reads SESSIONS_* names in any case (pydantic-settings, case_sensitive off)."""
    return [name, name.lower(), name.title(), name[0].lower() + name[1:]]


@pytest.mark.parametrize(
    "name",
    [variant for name in [*SECRET_SETTINGS, "REDIS_PASSWORD"] for variant in case_variants(name)],
)
def test_extra_env_refuses_every_secret_setting_as_a_plain_value(
    helm_template: Any, name: str
) -> None:
    for block in ("extraEnv", "worker.extraEnv"):
        result = helm_template([], {block: [{"name": name, "value": "plain"}]})
        assert result.returncode != 0, f"{block}: {name} accepted as a plain value"
        assert "extraEnv" in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["SESSIONS_ADMIN_KEY", "sessions_redis_password"])
def test_extra_env_takes_secret_settings_from_a_secret(render: Any, name: str) -> None:
    ref = {"secretKeyRef": {"name": "other-secret", "key": "k"}}
    render(set_values={"extraEnv": [{"name": name, "valueFrom": ref}]})


@pytest.mark.parametrize(
    ("block", "set_values"),
    [
        ("extraSettings", {"extraSettings.SESSIONS_MODEL_CONTEXT_TOKENS": "128000"}),
        ("extraSettings", {"extraSettings.SESSIONS_KEY_PREFIX": "tenant-a"}),
        ("extraEnv", {"extraEnv": [{"name": "sessions_log_level", "value": "DEBUG"}]}),
        ("extraEnv", {"extraEnv": [{"name": "SESSIONS_MODEL_CONTEXT_TOKENS", "value": "9000"}]}),
    ],
)
def test_plain_settings_are_still_accepted(
    render: Any, block: str, set_values: dict[str, Any]
) -> None:
    render(set_values=set_values)


def comment_above(values_text: str, block: str, key: str) -> str:
    """The comment lines right above ``key`` inside the top-level ``block`` of values.yaml."""
    lines = values_text.splitlines()
    start = lines.index(f"{block}:")
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(f"{key}:"))
    comment: list[str] = []
    for line in reversed(lines[start:at]):
        if not line.strip().startswith("#"):
            break
        comment.insert(0, line.strip().lstrip("#").strip())
    return " ".join(comment)


def test_worker_grace_period_is_described_as_it_works(chart_dir: Path, repo_root: Path) -> None:
    """On SIGTERM a worker drains: its running turns get ``settings.workerDrainSeconds`` to
    finish, then those still running are cancelled and handed over (see the failure modes in
    docs/architecture.md); the grace period covers both."""
    values_text = (chart_dir / "values.yaml").read_text(encoding="utf-8")
    comment = comment_above(values_text, "worker", "terminationGracePeriodSeconds")
    deploy = (repo_root / "docs" / "deploy.md").read_text(encoding="utf-8")
    items = re.split(r"\n(?=- |\n)", deploy)  # list items and paragraphs
    (item,) = [i for i in items if "`worker.terminationGracePeriodSeconds`" in i]
    paragraph = " ".join(item.split())
    for where, text in (("values.yaml", comment), ("docs/deploy.md", paragraph)):
        assert "workerDrainSeconds" in text and "drain" in text, f"{where}: {text!r}"
        assert "3 s" in text and "10 s" in text, f"{where}: {text!r}"
        assert re.search(r"start(s|) (each |it |)over", text), f"{where}: {text!r}"
        assert not re.search(r"does not wait|at once and hands|retried", text), f"{where}: {text!r}"
