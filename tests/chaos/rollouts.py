"""One soak rollout's objects, as a user writes them, and how a candidate goes bad.

Every rollout is judged the same way, so a healthy candidate can fail none of it and
each bad kind fails exactly one check:

- error-rate (5xx share over the interval): slo 0.05, abort 0.2. Healthy serves no
  errors; an error spike serves 50%, an abort at the first check that sees it.
- latency (mean over the interval): slo 0.25s, abort 1s. Healthy takes 0.1s (3%
  noise); a regression takes 0.4s, an SLO failure that rolls back at failureLimit 3.
- drift gate on two features against a training reference (PSI, decile bins, at least
  200 samples): both features shift by two sigma (PSI 3.3 each). The gate reads the
  histograms since the stage began, and the candidate goes bad a second or two after
  that (when the recorder sees the stage): the shift must win even when a third of
  the window is still unshifted (PSI 0.28 > max 0.25), as a one-sigma shift on one
  feature would not (0.52 for the feature, against featureMax 0.5, at 80%). A healthy
  candidate draws from the reference itself; at 200 samples a chance PSI above 0.25 on
  the mean of two features needs chi-square(18) > 100: never in practice.
- noDataPolicy Pause: an outage holds the weight and never rolls back.
"""

from __future__ import annotations

from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from chaos.bed import FEATURES, NAMESPACE, REFERENCE
from chaos.plan import Kind, Profile, RolloutPlan
from integration import objects

Obj = dict[str, Any]
HARNESS = "chaos-soak"  # the field manager of the soak's own writes
SELECT = 'namespace="{{namespace}}",deployment="{{candidate.deployment}}"'
ERROR_RATE = (
    f'sum(rate(model_requests_total{{{SELECT},code="500"}}[{{{{interval}}}}]))'
    f" / sum(rate(model_requests_total{{{SELECT}}}[{{{{interval}}}}]))"
)
LATENCY = (
    f"sum(rate(model_request_duration_seconds_sum{{{SELECT}}}[{{{{interval}}}}]))"
    f" / sum(rate(model_request_duration_seconds_count{{{SELECT}}}[{{{{interval}}}}]))"
)
GONE_BAD: dict[Kind, Obj] = {
    "error-spike": {"error_rate": 0.5},
    "latency": {"latency": 0.4},
    "drift": {"features": {name: {"mean": 2.0} for name in FEATURES}},
}
SCALE_DOWN_DELAY = "5s"
REQUEST_TIMEOUT = 10


def manifests(plan: RolloutPlan, profile: Profile, prometheus_url: str) -> list[Obj]:
    name = plan.name
    stable, candidate = f"{name}-v1", f"{name}-v2"
    rollout = objects.rollout(
        name,
        stable,
        candidate,
        {"gatewayAPI": {"httpRoute": name}},
        strategy={"stages": [{"weight": w, "duration": f"{d:g}s"} for w, d in plan.stages]},
        analysis={
            "interval": f"{profile.interval}s",
            "prometheus": {"address": prometheus_url, "timeout": f"{profile.timeout}s"},
            "failureLimit": 3,
            "errorLimit": 4,
            "noDataPolicy": "Pause",
            "metrics": [
                {"name": "error-rate", "query": ERROR_RATE, **_bounds(0.05, 0.2)},
                {"name": "latency", "query": LATENCY, **_bounds(0.25, 1.0)},
            ],
        },
        driftGate={
            "histogram": "model_feature_value",
            "features": list(FEATURES),
            "reference": {"configMapRef": {"name": REFERENCE}},
            "minSamples": 200,
        },
    )
    rollout["spec"]["stable"]["service"] = stable
    rollout["spec"]["candidate"]["service"] = candidate
    if plan.scale_down:
        rollout["spec"]["stable"]["scaleDownDelay"] = SCALE_DOWN_DELAY
        rollout["spec"]["candidate"]["scaleDownDelay"] = SCALE_DOWN_DELAY
    return [
        objects.deployment(stable, replicas=1),
        objects.deployment(candidate, replicas=1, version="v2"),
        objects.service(stable, stable),
        objects.service(candidate, candidate),
        objects.http_route(name, stable, candidate),
        rollout,
    ]


def _bounds(slo: float, abort: float) -> Obj:
    return {"slo": {"max": slo}, "abort": {"max": abort}}


def create(client: kubernetes.client.ApiClient, manifest: Obj) -> str | None:
    """Create one object; its resourceVersion, or None when an earlier attempt whose
    answer was lost (an API-server restart) had created it."""
    kind, body = manifest["kind"], dict(manifest, metadata=dict(manifest["metadata"]))
    body["metadata"]["namespace"] = NAMESPACE
    try:
        if kind == "Deployment":
            made: Any = kubernetes.client.AppsV1Api(client).create_namespaced_deployment(
                NAMESPACE, body, field_manager=HARNESS, _request_timeout=REQUEST_TIMEOUT
            )
            return str(made.metadata.resource_version)
        if kind == "Service":
            made = kubernetes.client.CoreV1Api(client).create_namespaced_service(
                NAMESPACE, body, field_manager=HARNESS, _request_timeout=REQUEST_TIMEOUT
            )
            return str(made.metadata.resource_version)
        group, version = manifest["apiVersion"].split("/")
        plural = {"HTTPRoute": "httproutes", "ModelRollout": "modelrollouts"}[kind]
        made = kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            group,
            version,
            NAMESPACE,
            plural,
            body,
            field_manager=HARNESS,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return str(made["metadata"]["resourceVersion"])
    except ApiException as error:
        if error.status == 409:
            return None
        raise
