"""GitOps tools writing the objects the operator drives, the way each writes them:

- Flux's kustomize-controller: server-side apply with force, field manager
  kustomize-controller;
- Argo CD: client-side apply (a JSON merge patch from the last-applied annotation)
  with its own field manager, again and again when self-heal is on.

The operator watches the routing objects it drives, so a sync that puts Git's weights
back is reasserted at once (Event WeightOverridden), not at the next tick; the ticks
here are a minute apart, so only the watch can explain a restore within half of one.
Deployment replicas (the replicas router) are not watched: they are reasserted at the
next tick. docs/gitops.md says what to configure so that the tools stop fighting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from . import objects
from .conftest import Api, Obj, Operator, stage
from .scenario import eventually, setup

SLOW_TICKS = {"interval": "60s", "prometheus": {"address": "http://127.0.0.1:9"}}
STAGES = [{"weight": 20, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
FIELD_MANAGERS = {
    "flux": ["apply", "--server-side", "--force-conflicts", "--field-manager=kustomize-controller"],
    "argocd": ["apply", "--field-manager=argocd-controller"],
}
GIT = {
    "gatewayAPI": lambda: objects.http_route("model", "model-v1", "model-v2"),
    "istio": lambda: objects.virtual_service("model", "model-v1", "model-v2"),
}
KIND = {"gatewayAPI": "httproute", "istio": "virtualservice"}


def sync(api: Api, tool: str, manifest: Obj) -> None:
    """What the tool does on a sync: Git's manifest, applied its way."""
    api.control_plane.kubectl(
        *FIELD_MANAGERS[tool], "-n", api.namespace, "-f", "-", input=yaml.safe_dump(manifest)
    )


def managers(api: Api, kind: str, field: str, name: str = "model") -> set[str]:
    """The field managers owning `spec.<field>` of the object."""
    return {
        entry["manager"]
        for entry in managed_fields(api, kind, name)
        if f"f:{field}" in json.dumps(entry.get("fieldsV1", {}).get("f:spec", {}))
    }


def managed_fields(api: Api, kind: str, name: str) -> list[Obj]:
    """kubectl hides managedFields unless asked; an object always has at least one."""
    out = api.control_plane.kubectl(
        "get", kind, name, "-n", api.namespace, "-o", "json", "--show-managed-fields"
    )
    entries: list[Obj] = json.loads(out)["metadata"]["managedFields"]
    return entries


def confirmed(obj: Obj) -> bool:
    return bool((obj.get("status") or {}).get("weightConfirmed"))


def wait_stage_one_confirmed(api: Api) -> None:
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    api.wait_rollout("model", confirmed, "the weight confirmed", 60)


def overridden(api: Api) -> list[Obj]:
    return [e for e in api.events("model") if e["reason"] == "WeightOverridden"]


def restore_seconds(read: Callable[[], Any], expected: Any) -> float:
    started = time.monotonic()
    eventually(read, expected, timeout=40)
    return time.monotonic() - started


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
@pytest.mark.parametrize("tool", ["flux", "argocd"])
def test_a_sync_of_the_route_is_reasserted_at_once(
    api: Api, operator: Operator, tool: str, router: str
) -> None:
    read = setup(api, router, {"stages": STAGES}, analysis=SLOW_TICKS)
    wait_stage_one_confirmed(api)
    eventually(read, (80, 20, False))
    syncs = 3 if tool == "argocd" else 1  # self-heal syncs again each time it sees a diff
    for _ in range(syncs):
        sync(api, tool, GIT[router]())
        seconds = restore_seconds(read, (80, 20, False))
        assert seconds < 30, f"restored after {seconds:.1f}s: the watch did not wake it"
    api.wait_events(
        "model", lambda e: e["reason"] == "WeightOverridden", "a WeightOverridden Event"
    )
    assert sum(e["count"] or 1 for e in overridden(api)) >= syncs
    field = "rules" if router == "gatewayAPI" else "http"
    assert "modelrollout-operator" in managers(api, KIND[router], field)


def test_a_sync_of_deployment_replicas_is_reasserted_at_the_next_tick(
    api: Api, operator: Operator
) -> None:
    read = setup(api, "replicas", {"stages": STAGES})
    wait_stage_one_confirmed(api)
    eventually(read, (8, 2), timeout=30)
    sync(api, "flux", objects.deployment("model-v1", replicas=10))
    eventually(read, (8, 2), timeout=30)  # ticks are 10s apart without analysis
    assert "modelrollout-operator" in managers(api, "deployment", "replicas", "model-v1")
    api.wait_events(
        "model", lambda e: e["reason"] == "WeightOverridden", "a WeightOverridden Event"
    )


def test_an_operator_owned_route_is_created_and_walked_with_no_one_else_on_it(
    api: Api, operator: Operator
) -> None:
    managed = {"parentRefs": [{"name": "gateway"}], "hostnames": ["model.example"]}
    rollout = objects.rollout(
        "model", "model-v1", "model-v2",
        {"gatewayAPI": {"httpRoute": "model", "managedRoute": managed}},
        strategy={"stages": [{"weight": 30, "duration": "2s"}, {"weight": 100, "duration": "1s"}]},
    )  # fmt: skip
    rollout["spec"]["stable"]["service"] = "model-v1"
    rollout["spec"]["candidate"]["service"] = "model-v2"
    api.apply(
        *objects.targets(replicas=2),
        rollout,
    )  # no HTTPRoute: the operator makes it
    done = api.wait_phase("model", "Succeeded", "Failed", "RolledBack", timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    route = api.get("httproute", "model")
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io",
                                             "kind": "Gateway", "name": "gateway"}]  # fmt: skip
    assert route["spec"]["hostnames"] == ["model.example"]
    weights = [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [("model-v1", 0), ("model-v2", 100)]
    owners = {e["manager"] for e in managed_fields(api, "httproute", "model")}
    assert owners == {"modelrollout-operator"}
