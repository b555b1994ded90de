"""Scenario helpers shared by the engine and analysis tests: targets, a rollout,
and readers of the routing state."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import objects
from .conftest import Api, Obj


@dataclass
class Exporters:
    """Exporter processes standing in for model servers, by Deployment name."""

    ports: dict[str, int]

    def configure(self, deployment: str, **config: Any) -> None:
        """POST /config: error rate, latency, feature distributions, values to feed."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[deployment]}/config",
            data=json.dumps(config).encode(),
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()


def gateway_weights(route: Obj) -> tuple[Any, ...]:
    rule = route["spec"]["rules"][0]
    mirror = any(f.get("type") == "RequestMirror" for f in rule.get("filters", []))
    return (*(ref.get("weight") for ref in rule["backendRefs"]), mirror)


def istio_weights(service: Obj) -> tuple[Any, ...]:
    http = service["spec"]["http"][0]
    return (*(r.get("weight") for r in http["route"]), "mirror" in http)


def setup(
    api: Api, router: str, strategy: Obj, *, candidate_version: str | None = None, **spec: Any
) -> Callable[[], tuple[Any, ...]]:
    """Create the targets for `router` and a rollout named `model`; return a reader of
    the routing state: (stable weight, candidate weight, mirroring) or replicas."""
    if router == "replicas":
        api.apply(
            objects.deployment("model-v1", replicas=10),
            objects.deployment("model-v2", replicas=0, version="v2"),
            objects.service("model", None),
            objects.rollout(
                "model", "model-v1", "model-v2", {"replicas": {"totalReplicas": 10}},
                strategy=strategy, **spec,
            ),
        )  # fmt: skip
        return lambda: (
            api.get("deployment", "model-v1")["spec"]["replicas"],
            api.get("deployment", "model-v2")["spec"]["replicas"],
        )
    route = (
        objects.http_route("model", "model-v1", "model-v2")
        if router == "gatewayAPI"
        else objects.virtual_service("model", "model-v1", "model-v2")
    )
    routing = (
        {"gatewayAPI": {"httpRoute": "model"}}
        if router == "gatewayAPI"
        else {"istio": {"virtualService": "model", "routeName": "predict"}}
    )
    rollout = objects.rollout("model", "model-v1", "model-v2", routing, strategy=strategy, **spec)
    rollout["spec"]["stable"]["service"] = "model-v1"
    rollout["spec"]["candidate"]["service"] = "model-v2"
    if candidate_version is not None:
        rollout["spec"]["candidate"]["modelVersion"] = candidate_version
    api.apply(
        *objects.targets(replicas=2),
        route,
        rollout,
    )
    kind = "httproute" if router == "gatewayAPI" else "virtualservice"
    read = gateway_weights if router == "gatewayAPI" else istio_weights
    return lambda: read(api.get(kind, "model"))


def eventually(read: Callable[[], Any], expected: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    seen = read()
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = read()
    assert seen == expected
    return seen
