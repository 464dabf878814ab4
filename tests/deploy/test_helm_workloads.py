"""The chart's workloads in detail: probes, config checksums, the cleanup CronJob's command and
volumes, and the bundled Redis."""

from __future__ import annotations

from typing import Any

from .manifests import Manifest, app_workloads, containers, one, pod_metadata, pod_spec


def test_probes(default_objects: list[Manifest]) -> None:
    (api,) = containers(one(default_objects, "Deployment", "api"))
    assert api["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/livez"
    assert api["command"] == ["sessionctl", "serve", "--host", "0.0.0.0", "--port", "8000"]
    (worker,) = containers(one(default_objects, "Deployment", "worker"))
    assert worker["command"] == ["sessionctl", "worker", "--metrics-port", "9100"]
    check = ["sessionctl", "worker", "--check"]
    assert worker["livenessProbe"]["exec"]["command"] == check
    assert worker["startupProbe"]["exec"]["command"] == check


def test_config_checksum_rolls_pods_when_settings_change(render: Any) -> None:
    def checksums(objects: list[Manifest]) -> set[str]:
        return {
            pod_metadata(workload)["annotations"]["checksum/config"]
            for workload in app_workloads(objects).values()
        }

    before = checksums(render())
    after = checksums(render(set_values={"settings.logLevel": "DEBUG"}))
    assert len(before) == 1 and len(after) == 1 and before != after


def test_cleanup_default_command(default_objects: list[Manifest]) -> None:
    cronjob = one(default_objects, "CronJob", "cleanup")
    assert cronjob["spec"]["schedule"] == "17 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = containers(cronjob)
    assert container["command"] == ["sessionctl", "cleanup", "--idle-for", "30d", "--json"]
    assert "args" not in container
    assert pod_spec(cronjob)["restartPolicy"] == "Never"


def test_cleanup_command_follows_filter_values(render: Any) -> None:
    objects = render(
        set_values={
            "cleanup.schedule": "@hourly",
            "cleanup.filters.tenant": "acme",
            "cleanup.filters.olderThan": "90d",
            "cleanup.filters.idleFor": "7d",
            "cleanup.filters.labels.env": "staging",
            "cleanup.filters.labels.app": "chat",
            "cleanup.filters.includeInfinite": True,
            "cleanup.filters.limit": 500,
            "cleanup.dryRun": True,
            "cleanup.json": False,
        }
    )
    cronjob = one(objects, "CronJob", "cleanup")
    assert cronjob["spec"]["schedule"] == "@hourly"
    (container,) = containers(cronjob)
    assert container["command"] == [
        "sessionctl", "cleanup",
        "--tenant", "acme",
        "--older-than", "90d",
        "--idle-for", "7d",
        "--label", "app=chat",
        "--label", "env=staging",
        "--include-infinite",
        "--limit", "500",
        "--dry-run",
    ]  # fmt: skip


def test_cleanup_export_mounts_the_claim(production_objects: list[Manifest]) -> None:
    cronjob = one(production_objects, "CronJob", "cleanup")
    (container,) = containers(cronjob)
    command = container["command"]
    assert command[:2] == ["sessionctl", "cleanup"]
    assert command[command.index("--export-to") + 1] == "/exports"
    assert "--gzip" in command
    assert command[command.index("--idle-for") + 1] == "90d"
    assert command[command.index("--limit") + 1] == "50000"
    volumes = {volume["name"]: volume for volume in pod_spec(cronjob)["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/exports")
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == "sessions-exports"


def test_bundled_redis_is_durable_and_used(render: Any) -> None:
    objects = render(set_values={"bundledRedis.enabled": True, "bundledRedis.maxmemory": "1gb"})
    redis = one(objects, "StatefulSet", "redis")
    service = one(objects, "Service", "redis")
    (container,) = containers(redis)
    command = container["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1] == "1gb"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (api,) = containers(one(objects, "Deployment", "api"))
    url = next(item for item in api["env"] if item["name"] == "SESSIONS_REDIS_URL")
    assert url["value"] == f"redis://{service['metadata']['name']}:6379/0"
