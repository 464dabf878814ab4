"""The Helm chart: lint, rendered manifests checked against Kubernetes schemas, and the rules every
rendered object follows (same image and settings everywhere, secrets only from the Secret, hardened
containers, labels and names)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from service.config import Settings
from service.connections import create_data_redis
from workers.queue import queue_redis_settings

from .manifests import (
    WORKLOAD_KINDS,
    Manifest,
    app_workloads,
    by_kind,
    containers,
    one,
    pod_metadata,
    pod_spec,
)

# Kubernetes versions the rendered manifests must be valid for: the chart's minimum (Chart.yaml
# kubeVersion) and the version helm 3.17 renders for by default.
K8S_VERSIONS = ("1.29.0", "1.32.0")
SECRET_ENV = {
    "SESSIONS_ADMIN_KEY",
    "SESSIONS_OPENAI_API_KEY",
    "SESSIONS_REDIS_URL",
    "SESSIONS_QUEUE_REDIS_URL",
    "SESSIONS_REDIS_PASSWORD",
    "REDIS_PASSWORD",
}
SENTINELS = {
    "secrets.values.redisUrl": "redis://:sentinel-redis-password@redis.example:6379/0",
    "secrets.values.adminKey": "sentinel-admin-key-0123456789",
    "secrets.values.openaiApiKey": "sentinel-provider-key-0123456789",
}

# Value sets rendered and validated besides the defaults and the production values.
VARIANTS: dict[str, dict[str, Any]] = {
    "bundled-redis": {"bundledRedis.enabled": True, "bundledRedis.maxmemory": "1gb"},
    "bundled-redis-no-persistence": {
        "bundledRedis.enabled": True,
        "bundledRedis.persistence.enabled": False,
    },
    "trial-secret": {"secrets.create": True, **SENTINELS},
    "external-redis-parts": {
        "externalRedis.host": "redis.internal",
        "externalRedis.tls": True,
        "secrets.keys.redisPassword": "redis-password",
    },
    "cluster": {
        "settings.redisCluster": True,
        "settings.redisClusterNodes": "r1:6379,r2:6379",
        "secrets.keys.queueRedisUrl": "queue-redis-url",
        "settings.indexShards": 16,
    },
    "everything-off": {"cleanup.enabled": False, "serviceAccount.create": False},
    "worker-keda": {"worker.keda.enabled": True, "worker.serviceMonitor.enabled": True},
    "worker-metrics-off": {"worker.metrics.enabled": False},
}
# Custom resources: no built-in schema; their shape is checked by their own tests.
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/")


def all_renders(render: Any, production_values: Path) -> dict[str, list[Manifest]]:
    renders = {"default": render(), "production": render([production_values])}
    for name, values in VARIANTS.items():
        renders[name] = render(set_values=values)
    return renders


@pytest.mark.parametrize("values", ["default", "production"])
def test_helm_lint_strict_passes(
    helm_run: Any, chart_dir: Path, production_values: Path, values: str
) -> None:
    args = ["lint", "--strict", str(chart_dir)]
    if values == "production":
        args += ["--values", str(production_values)]
    result = helm_run(*args)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_rendered_objects_match_kubernetes_schemas(
    render: Any, production_values: Path, k8s_version: str
) -> None:
    failures = []
    for name, objects in all_renders(render, production_values).items():
        for obj in objects:
            if obj["apiVersion"].startswith(CRD_GROUPS):
                continue  # a CRD: no built-in schema; its shape is checked in its own tests
            try:
                kubernetes_validate.validate(obj, k8s_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{name}: {obj['kind']} {obj['metadata']['name']}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_default_render_has_core_objects(default_objects: list[Manifest]) -> None:
    kinds = Counter(obj["kind"] for obj in default_objects)
    assert kinds["Deployment"] == 2
    one(default_objects, "Deployment", "api")
    one(default_objects, "Deployment", "worker")
    one(default_objects, "Service", "api")
    one(default_objects, "CronJob", "cleanup")
    one(default_objects, "ConfigMap", "config")
    one(default_objects, "ServiceAccount")
    for optional in (
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "ServiceMonitor",
        "ScaledObject",
        "PrometheusRule",
    ):
        assert kinds[optional] == 0, f"{optional} must be off by default"
    assert kinds["ConfigMap"] == 1, "the dashboard ConfigMap must be off by default"
    assert kinds["StatefulSet"] == 0, "the bundled Redis must be off by default"
    assert kinds["Secret"] == 0, "the chart must not create a Secret by default"


def test_production_render_has_scaling_and_exposure(production_objects: list[Manifest]) -> None:
    for component in ("api", "worker"):
        hpa = one(production_objects, "HorizontalPodAutoscaler", component)
        target = hpa["spec"]["scaleTargetRef"]
        deployment = one(production_objects, "Deployment", component)
        assert target["kind"] == "Deployment"
        assert target["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"]
        pdb = one(production_objects, "PodDisruptionBudget", component)
        pod_labels = pod_metadata(deployment)["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ingress = one(production_objects, "Ingress", "api")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(production_objects, "Service", "api")["metadata"]["name"]
    assert ingress["spec"]["tls"], "production Ingress terminates TLS"
    one(production_objects, "ServiceMonitor", "api")
    assert not by_kind(production_objects, "Secret")


def test_service_monitor_scrapes_api_metrics(production_objects: list[Manifest]) -> None:
    monitor = one(production_objects, "ServiceMonitor", "api")
    service = one(production_objects, "Service", "api")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_service_selects_api_pods_only(default_objects: list[Manifest]) -> None:
    selector = one(default_objects, "Service", "api")["spec"]["selector"]
    api_labels = pod_metadata(one(default_objects, "Deployment", "api"))["labels"]
    worker_labels = pod_metadata(one(default_objects, "Deployment", "worker"))["labels"]
    assert selector.items() <= api_labels.items()
    assert not selector.items() <= worker_labels.items()


@pytest.mark.parametrize("values", ["default", "production"])
def test_components_share_image_and_settings(
    render: Any, production_values: Path, values: str
) -> None:
    objects = render([production_values] if values == "production" else [])
    configmap = one(objects, "ConfigMap", "config")["metadata"]["name"]
    seen = {}
    for component, workload in app_workloads(objects).items():
        (container,) = containers(workload)
        assert container["envFrom"] == [{"configMapRef": {"name": configmap}}], component
        seen[component] = (container["image"], container["envFrom"], container["env"])
    assert seen["api"] == seen["worker"] == seen["cleanup"]


def test_configmap_holds_the_settings(default_objects: list[Manifest]) -> None:
    data = one(default_objects, "ConfigMap", "config")["data"]
    assert all(key.startswith("SESSIONS_") for key in data)
    assert all(isinstance(value, str) for value in data.values())
    assert data["SESSIONS_KEY_PREFIX"] == "sess"
    assert data["SESSIONS_PROVIDER"] == "dev"
    assert data["SESSIONS_LOG_FORMAT"] == "json"
    assert data["SESSIONS_MAX_SESSIONS_PER_TENANT"] == "100000"


def test_large_numbers_are_not_rendered_in_exponent_form(render: Any) -> None:
    objects = render(set_values={"settings.maxSessionsPerTenant": 10000000})
    data = one(objects, "ConfigMap", "config")["data"]
    assert data["SESSIONS_MAX_SESSIONS_PER_TENANT"] == "10000000"


def test_secrets_only_come_from_the_existing_secret(production_objects: list[Manifest]) -> None:
    for component, workload in app_workloads(production_objects).items():
        (container,) = containers(workload)
        env = {item["name"]: item for item in container["env"]}
        assert {"SESSIONS_REDIS_URL", "SESSIONS_ADMIN_KEY", "SESSIONS_OPENAI_API_KEY"} <= env.keys()
        for name in SECRET_ENV & env.keys():
            assert "value" not in env[name], f"{component}: {name} has a plain value"
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "sessions-secrets", f"{component}: {name} reads {ref['name']}"
        assert env["SESSIONS_OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is False
    for configmap in by_kind(production_objects, "ConfigMap"):
        assert not SECRET_ENV & configmap["data"].keys()


def test_trial_secret_values_appear_only_in_the_secret(render: Any) -> None:
    objects = render(set_values={"secrets.create": True, **SENTINELS})
    secret = one(objects, "Secret")
    assert set(secret["stringData"].values()) == set(SENTINELS.values())
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = repr(obj)
        for sentinel in SENTINELS.values():
            assert sentinel not in text, f"{obj['kind']} {obj['metadata']['name']} leaks a secret"
    checksums = {
        pod_metadata(w)["annotations"].get("checksum/secret")
        for w in app_workloads(objects).values()
    }
    assert len(checksums) == 1 and None not in checksums


def test_redis_url_built_from_parts_reads_only_the_password(render: Any) -> None:
    objects = render(set_values=VARIANTS["external-redis-parts"])
    (container,) = containers(one(objects, "Deployment", "api"))
    env = {item["name"]: item for item in container["env"]}
    assert "REDIS_PASSWORD" not in env
    ref = env["SESSIONS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "sessions-redis-sessions", "key": "redis-password"}
    assert env["SESSIONS_REDIS_URL"]["value"] == "rediss://redis.internal:6379/0"


def pod_environment(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: Secret references read from ``secret``,
    then $(NAME) references to earlier entries expanded."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m[1], m[0]),
                item["value"],
            )
    return env


@pytest.mark.parametrize("username", ["", "app", "app ops+1@corp/x:y%41"])
def test_external_redis_password_reaches_data_and_queue_clients_as_it_is(
    render: Any, monkeypatch: pytest.MonkeyPatch, username: str
) -> None:
    """Managed Redis services issue passwords with / + = and the like: the service must get the
    password as the Secret holds it, whatever URL parsing would make of it; an ACL user name
    with such characters reaches both clients as it is too."""
    password = "ab/c+d==#x@y:z%41?"
    objects = render(
        set_values={**VARIANTS["external-redis-parts"], "externalRedis.username": username}
    )
    secret = {"redis-password": password, "admin-key": "a" * 32, "openai-api-key": "sk-x"}
    for component in ("api", "worker"):
        (container,) = containers(one(objects, "Deployment", component))
        for name in [n for n in os.environ if n.upper().startswith("SESSIONS_")]:
            monkeypatch.delenv(name)
        for name, value in pod_environment(container, secret).items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        data = create_data_redis(settings).connection_pool.connection_kwargs
        assert (data["host"], data["port"], data["password"]) == ("redis.internal", 6379, password)
        assert data.get("username") == (username or None)
        queue = queue_redis_settings(settings)
        assert (queue.host, queue.port, queue.password) == ("redis.internal", 6379, password)
        assert queue.ssl is True and queue.username == (username or None)


def test_cluster_mode_reads_queue_url_from_secret(render: Any) -> None:
    objects = render(set_values=VARIANTS["cluster"])
    (container,) = containers(one(objects, "Deployment", "worker"))
    env = {item["name"]: item for item in container["env"]}
    ref = env["SESSIONS_QUEUE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "queue-redis-url"
    data = one(objects, "ConfigMap", "config")["data"]
    assert data["SESSIONS_REDIS_CLUSTER"] == "true"
    assert data["SESSIONS_REDIS_CLUSTER_NODES"] == "r1:6379,r2:6379"


@pytest.mark.parametrize("name", ["default", "production", *VARIANTS])
def test_every_container_is_hardened(render: Any, production_values: Path, name: str) -> None:
    objects = all_renders(render, production_values)[name]
    workloads = [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        where = f"{workload['kind']} {workload['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for container in containers(workload):
            at = f"{where} container {container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, at
            assert context["runAsUser"] != 0, at
            assert context["readOnlyRootFilesystem"] is True, at
            assert context["allowPrivilegeEscalation"] is False, at
            assert context.get("privileged", False) is False, at
            assert context["capabilities"]["drop"] == ["ALL"], at
            assert not context["capabilities"].get("add"), at
            assert context["seccompProfile"]["type"] == "RuntimeDefault", at
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, at
            assert "memory" in container["resources"].get("limits", {}), at
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{at}: no writable /tmp"
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{at}: /tmp is not an emptyDir"


def test_labels_and_selectors(production_objects: list[Manifest]) -> None:
    for obj in production_objects:
        labels = obj["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{obj['kind']} {obj['metadata']['name']} lacks {key}"
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_metadata(obj)["labels"].items()
            assert "app.kubernetes.io/component" in selector


@pytest.mark.parametrize(
    ("release", "set_values"),
    [
        ("a-release-name-of-the-longest-length-helm-allows-53c", {}),
        ("sessions", {"fullnameOverride": "x" * 80}),
        ("sessions", {"nameOverride": "n" * 80}),
    ],
    ids=["long-release", "long-fullname-override", "long-name-override"],
)
def test_names_are_capped(render: Any, release: str, set_values: dict[str, Any]) -> None:
    objects = render(set_values={"bundledRedis.enabled": True, **set_values}, release=release)
    kinds_and_names = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    assert len(kinds_and_names) == len(set(kinds_and_names)), "names clash after truncation"
    for obj in objects:
        name = obj["metadata"]["name"]
        limit = 52 if obj["kind"] == "CronJob" else 63
        assert len(name) <= limit, f"{obj['kind']} name {name!r} is longer than {limit}"
        assert not name.endswith("-") and not name.startswith("-"), name
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63, f"label value {value!r} is longer than 63"


def test_one_object_per_template(helm_template: Any, production_values: Path) -> None:
    result = helm_template([production_values], {"bundledRedis.enabled": True})
    assert result.returncode == 0, result.stderr
    sources = Counter(
        line.removeprefix("# Source: ")
        for line in result.stdout.splitlines()
        if line.startswith("# Source: ")
    )
    assert sources, "helm template output has no source comments"
    assert all(count == 1 for count in sources.values()), sources
