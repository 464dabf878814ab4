"""The chart's monitoring: the workers' metrics port and ServiceMonitor, KEDA scaling on the
queue, the Grafana dashboard and the alerts; every metric they name is one the code exports."""

from __future__ import annotations

import json
import re
from typing import Any

from service.metrics import Metrics, QueueFigures, RedisFigures, ScrapeFigures
from workers import metrics as worker_metrics

from .manifests import Manifest, by_kind, containers, one, pod_metadata

METRIC = re.compile(r"\b(sessions_[a-z_]+|process_[a-z_]+)")


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
    "info": ("_info",),
}


def exported_names() -> set[str]:
    """Every series name the API and a worker can expose (labelled series included before
    their first sample)."""
    figures = ScrapeFigures(QueueFigures(0, 0, 0.0), RedisFigures({"noeviction": 1}, 1, 0, 0))
    registries = [Metrics().registry, figures.registry(), worker_metrics.REGISTRY]
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_worker_serves_metrics_that_its_service_monitor_scrapes(
    production_objects: list[Manifest],
) -> None:
    worker = one(production_objects, "Deployment", "worker")
    (container,) = containers(worker)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    command = container["command"]
    assert command[command.index("--metrics-port") + 1] == str(port)
    services = [s for s in by_kind(production_objects, "Service") if s["spec"].get("clusterIP")]
    (service,) = [
        s for s in services if s["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    assert service["spec"]["selector"].items() <= pod_metadata(worker)["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = one(production_objects, "ServiceMonitor", "worker")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


def test_worker_metrics_can_be_turned_off(render: Any) -> None:
    worker = one(render(set_values={"worker.metrics.enabled": False}), "Deployment", "worker")
    (container,) = containers(worker)
    assert "--metrics-port" not in container["command"] and "ports" not in container


def test_keda_scales_the_workers_on_the_queue(render: Any) -> None:
    objects = render(set_values={"worker.keda.enabled": True})
    scaled = one(objects, "ScaledObject", "worker")
    worker = one(objects, "Deployment", "worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    assert not by_kind(objects, "HorizontalPodAutoscaler")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert 'sessions_queue_jobs{namespace="sessions-ns"}' in query
    assert set(METRIC.findall(query)) <= exported_names()
    assert float(trigger["metadata"]["threshold"]) > 0


def test_alerts_cover_the_issues_and_name_exported_metrics(
    production_objects: list[Manifest],
) -> None:
    rule = one(production_objects, "PrometheusRule", "alerts")
    rules = rule["spec"]["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {
        "SessionsTurnsStranded",
        "SessionsProviderErrorRate",
        "SessionsQueueOldestJobAge",
        "SessionsRedisEvictionPolicy",
    } <= names
    exported = exported_names()
    for r in rules:
        used = set(METRIC.findall(r["expr"]))
        assert used and used <= exported, (r["alert"], used - exported)
        assert 'namespace="sessions-ns"' in r["expr"]
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert "{{" not in r["annotations"]["summary"], "rendered, not left to Prometheus"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_is_valid_json_naming_exported_metrics(
    production_objects: list[Manifest],
) -> None:
    configmap = one(production_objects, "ConfigMap", "dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Sessions"
    (text,) = configmap["data"].values()
    dashboard = json.loads(text)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    missing = used - exported_names()
    assert not missing, missing
    for expr in exprs:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    assert "tenant" not in text
