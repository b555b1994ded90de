"""Manifests of the objects a rollout points at, as a user would write them."""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]


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
    template: Manifest = {"labels": {**labels, version_label: version}}
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
                "spec": {"containers": [{"name": "server", "image": "model-server:dev"}]},
            },
        },
    }


def service(name: str, deployment_name: str | None = None) -> Manifest:
    selector = {"app": "model"} | ({"deployment": deployment_name} if deployment_name else {})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }


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
