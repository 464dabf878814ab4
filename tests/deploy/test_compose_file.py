"""deploy/compose.yaml and deploy/redis.conf: durable Redis, one image for api and worker,
health checks everywhere, secrets never written in the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")
SECRET_ENV = ("SESSIONS_ADMIN_KEY", "SESSIONS_OPENAI_API_KEY")


def with_defaults(value: Any) -> Any:
    """The value compose sees when no variable is set: ${NAME:-default} -> default."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)
    if isinstance(value, list):
        return [with_defaults(item) for item in value]
    if isinstance(value, dict):
        return {key: with_defaults(item) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def deploy_dir(repo_root: Path) -> Path:
    return repo_root / "deploy"


@pytest.fixture(scope="module")
def compose(deploy_dir: Path) -> dict[str, Any]:
    text = (deploy_dir / "compose.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return {name: with_defaults(service) for name, service in compose["services"].items()}


@pytest.fixture(scope="module")
def redis_conf(deploy_dir: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in (deploy_dir / "redis.conf").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            settings[key.lower()] = value.strip()
    return settings


def test_services(services: dict[str, Any]) -> None:
    assert {"redis", "api", "worker"} <= services.keys()
    for name in services.keys() - {"redis", "api", "worker"}:
        assert "profiles" in services[name], f"{name} would start with `up`: give it a profile"


def test_redis_is_durable(services: dict[str, Any], redis_conf: dict[str, str]) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    config_path = next(path for path, source in mounts.items() if source == "./redis.conf")
    command = redis["command"]
    assert command[:2] == ["redis-server", config_path]
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert redis_conf["appendonly"] == "yes"
    assert redis_conf["appendfsync"] == "everysec"
    assert redis_conf["maxmemory-policy"] == "noeviction"
    assert redis_conf["dir"] == "/data"
    assert "/data" in mounts and not mounts["/data"].startswith("."), "AOF on a named volume"
    assert "ports" not in redis, "Redis must not be published on the host"


def test_appendfsync_can_be_switched_to_always(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    value = command[command.index("--appendfsync") + 1]
    match = INTERPOLATION.fullmatch(value)
    assert match and match.group(1) == "REDIS_APPENDFSYNC", value


def test_api_and_worker_share_image_build_and_settings(
    services: dict[str, Any], deploy_dir: Path
) -> None:
    api, worker = services["api"], services["worker"]
    assert api["image"] == worker["image"]
    assert api["build"] == worker["build"]
    assert api["environment"] == worker["environment"]
    build = api["build"]
    context = (deploy_dir / build["context"]).resolve()
    assert context == deploy_dir.parent.resolve(), "build context is the repository root"
    assert (context / build["dockerfile"]).resolve() == (deploy_dir / "Dockerfile").resolve()
    assert api["command"] == ["sessionctl", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert worker["command"] == ["sessionctl", "worker", "--metrics-port", "9100"]
    assert "ports" not in worker, "scaled workers cannot share a published port"
    if "cleanup" in services:
        assert services["cleanup"]["image"] == api["image"]
        assert services["cleanup"]["entrypoint"] == ["sessionctl", "cleanup"]


def test_healthchecks(services: dict[str, Any]) -> None:
    for name in ("redis", "api", "worker"):
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert "/livez" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"][1:] == ["sessionctl", "worker", "--check"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_application_containers_are_hardened(services: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        service = services[name]
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        uid = str(service.get("user", "10001")).split(":")[0]
        assert uid.isdigit() and int(uid) != 0, name


def test_no_secret_values_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        for key in SECRET_ENV:
            if key in environment:
                assert environment[key] is None, f"{name}: {key} must come from the environment"
        url = environment.get("SESSIONS_REDIS_URL", "")
        assert "@" not in url, f"{name}: credentials in SESSIONS_REDIS_URL"


def test_interpolations_are_well_formed(deploy_dir: Path) -> None:
    text = (deploy_dir / "compose.yaml").read_text(encoding="utf-8")
    for token in re.findall(r"\$\{[^}]*\}", text):
        assert INTERPOLATION.fullmatch(token), f"malformed interpolation {token}"
