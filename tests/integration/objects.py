"""Manifests of the objects a rollout points at, as a user would write them."""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]
MODEL_SERVER = "model-server:dev"  # the image of the model servers


def deployment_of(
    name: str,
    labels: dict[str, str],
    replicas: int = 1,
    *,
    pod_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[Manifest] | None = None,
) -> Manifest:
    """A Deployment selecting its pods by `labels`; the pods carry `labels` and
    `pod_labels`, and `annotations`, and run `containers` (a model server)."""
    template: Manifest = {"labels": {**labels, **(pod_labels or {})}}
    if annotations:
        template["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": template,
                "spec": {
                    "containers": containers or [{"name": "server", "image": "model-server:dev"}]
                },
            },
        },
    }


def deployment(
    name: str,
    replicas: int = 1,
    version: str = "v1",
    *,
    app: str = "model",
    version_label: str = "version",
    annotations: dict[str, str] | None = None,
) -> Manifest:
    """A Deployment labelled with its app and its own name; its pods also carry the
    model version (and `annotations`, which the e2e backends read as fault knobs)."""
    labels = {"app": app, "deployment": name}
    return deployment_of(
        name, labels, replicas, pod_labels={version_label: version}, annotations=annotations
    )


def service(
    name: str, deployment_name: str | None = None, *, selector: dict[str, str] | None = None
) -> Manifest:
    """A Service on port 80 to the pods' 8080: those of `selector`, by default the
    model's (of `deployment_name` alone, when given)."""
    if selector is None:
        selector = {"app": "model"} | ({"deployment": deployment_name} if deployment_name else {})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def targets(
    stable: str = "model-v1", candidate: str = "model-v2", replicas: int = 1
) -> list[Manifest]:
    """The stable's (v1) and the candidate's (v2) Deployments and a Service for each."""
    return [
        deployment(stable, replicas),
        deployment(candidate, replicas, version="v2"),
        service(stable, stable),
        service(candidate, candidate),
    ]


def http_route(name: str, stable_service: str, candidate_service: str) -> Manifest:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": stable_service, "port": 80, "weight": 100},
                        {"name": candidate_service, "port": 80, "weight": 0},
                    ]
                }
            ],
        },
    }


def virtual_service(name: str, stable_service: str, candidate_service: str) -> Manifest:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "name": "predict",
                    "route": [
                        {"destination": {"host": stable_service}, "weight": 100},
                        {"destination": {"host": candidate_service}, "weight": 0},
                    ],
                }
            ],
        },
    }


def rollout(name: str, stable: str, candidate: str, routing: Manifest, **spec: Any) -> Manifest:
    """A ModelRollout on the 1-5-25-100 preset; keyword arguments override spec fields."""
    return {
        "apiVersion": "rollouts.mlops.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "stable": {"deployment": stable},
            "candidate": {"deployment": candidate},
            "trafficRouting": routing,
            "strategy": {"preset": "1-5-25-100", "stageDuration": "30s"},
            **spec,
        },
    }


def gateway_rollout(
    name: str, stable: str, candidate: str, route: str | None = None, **spec: Any
) -> Manifest:
    """`rollout` on the HTTPRoute `route` (by default `name`), each side's Service named
    as its Deployment."""
    manifest = rollout(
        name, stable, candidate, {"gatewayAPI": {"httpRoute": route or name}}, **spec
    )
    manifest["spec"]["stable"]["service"] = stable
    manifest["spec"]["candidate"]["service"] = candidate
    return manifest
