"""Helpers to read rendered Kubernetes manifests in the deployment tests."""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob", "Job", "Pod", "DaemonSet"}


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Manifest], kind: str, component: str | None = None) -> Manifest:
    found = [
        obj
        for obj in by_kind(objects, kind)
        if component is None
        or obj["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def pod_template(obj: Manifest) -> dict[str, Any]:
    """The pod (metadata and spec) a workload runs; a Pod is its own template."""
    if obj["kind"] == "Pod":
        return obj
    template: dict[str, Any] = (
        obj["spec"]["jobTemplate"]["spec"]["template"]
        if obj["kind"] == "CronJob"
        else obj["spec"]["template"]
    )
    return template


def pod_spec(obj: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(obj)["spec"]
    return spec


def pod_metadata(obj: Manifest) -> dict[str, Any]:
    metadata: dict[str, Any] = pod_template(obj)["metadata"]
    return metadata


def containers(obj: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def app_workloads(objects: list[Manifest]) -> dict[str, Manifest]:
    """The API Deployment, the worker Deployment and the cleanup CronJob, by component."""
    return {
        "api": one(objects, "Deployment", "api"),
        "worker": one(objects, "Deployment", "worker"),
        "cleanup": one(objects, "CronJob", "cleanup"),
    }
