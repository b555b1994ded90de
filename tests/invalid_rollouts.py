"""Invalid ModelRollouts, each with the words its rejection must contain.

Shared by the unit tests (the pydantic models) and the integration tests (the
real API server with the generated CRD), so the two validators stay in step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


def valid_rollout(name: str = "valid") -> Manifest:
    """A rollout using most features, accepted by both validators."""
    return {
        "apiVersion": "rollouts.mlops.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "stable": {"deployment": "model-v1", "service": "model-v1"},
            "candidate": {"deployment": "model-v2", "service": "model-v2"},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "model"}},
            "strategy": {
                "stages": [
                    {"weight": 0, "mirror": True, "duration": "1m"},
                    {"weight": 10, "duration": "5m", "minSamples": 100},
                    {"weight": 50, "duration": "5m", "approval": "Manual"},
                    {"weight": 100, "duration": "1m"},
                ]
            },
            "analysis": {
                "interval": "10s",
                "prometheus": {"address": "http://prometheus:9090"},
                "samplesQuery": 'sum(increase(requests_total{d="{{candidate.deployment}}"}[1m]))',
                "metrics": [
                    {
                        "name": "error-rate",
                        "query": "sum(rate(errors_total[1m]))",
                        "slo": {"max": 0.01},
                        "abort": {"max": 0.05},
                    },
                    {
                        "name": "latency",
                        "query": "avg(latency_seconds)",
                        "compare": {"direction": "increase", "tolerance": 0.2},
                    },
                ],
            },
            "driftGate": {
                "histogram": "model_feature_value",
                "features": ["a", "b"],
                "reference": {"stable": {}},
                "warn": 0.1,
                "max": 0.2,
            },
        },
    }


@dataclass(frozen=True)
class InvalidCase:
    id: str
    mutate: Callable[[Manifest], None]
    api_error: str
    """Words the API server's refusal contains."""
    model_error: str | None = None
    """Words pydantic's refusal contains; None means the same as api_error."""

    def manifest(self, name: str = "invalid") -> Manifest:
        manifest = copy.deepcopy(valid_rollout(name))
        self.mutate(manifest["spec"])
        return manifest


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def mutate(spec: Manifest) -> None:
        *parents, leaf = path.split(".")
        node: Any = spec
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is _DELETE:
            del node[leaf]
        elif leaf.isdigit():
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return mutate


_DELETE = object()
_PRESET_STRATEGY = {"preset": "1-5-25-100"}

CASES: list[InvalidCase] = [
    InvalidCase(
        "preset-and-stages",
        _set("strategy.preset", "1-5-25-100"),
        "strategy needs exactly one of preset or stages",
    ),
    InvalidCase(
        "neither-preset-nor-stages",
        _set("strategy", {}),
        "strategy needs exactly one of preset or stages",
    ),
    InvalidCase(
        "unknown-preset",
        _set("strategy", {"preset": "1-2-3"}),
        'Unsupported value: "1-2-3"',
        "Input should be '1-5-25-100' or '5-10-25-50-100'",
    ),
    InvalidCase(
        "last-stage-not-100",
        _set("strategy.stages.3", {"weight": 90, "duration": "1m"}),
        "the last stage must have weight 100",
    ),
    InvalidCase(
        "weights-decrease",
        _set("strategy.stages.2.weight", 5),
        "stage weights must increase strictly",
    ),
    InvalidCase(
        "weights-repeat",
        _set("strategy.stages.2.weight", 10),
        "stage weights must increase strictly",
    ),
    InvalidCase(
        "weight-above-100",
        _set("strategy.stages.3.weight", 101),
        "should be less than or equal to 100",
        "less than or equal to 100",
    ),
    InvalidCase(
        "zero-weight-without-mirror",
        _set("strategy.stages.0.mirror", False),
        "a mirror stage has weight 0; any other stage has a weight of 1 to 100",
    ),
    InvalidCase(
        "mirror-stage-with-weight",
        _set("strategy.stages.1.mirror", True),
        "a mirror stage has weight 0; any other stage has a weight of 1 to 100",
    ),
    InvalidCase(
        "mirror-with-replicas-router",
        _set("trafficRouting", {"replicas": {}}),
        "mirror stages need a router that can mirror (gatewayAPI or istio)",
    ),
    InvalidCase(
        "two-routing-methods",
        _set("trafficRouting.istio", {"virtualService": "model"}),
        "trafficRouting needs exactly one of replicas, gatewayAPI or istio",
    ),
    InvalidCase(
        "no-routing-method",
        _set("trafficRouting", {}),
        "trafficRouting needs exactly one of replicas, gatewayAPI or istio",
    ),
    InvalidCase(
        "gateway-api-without-services",
        _set("stable.service", _DELETE),
        "gatewayAPI and istio routing need stable.service and candidate.service",
    ),
    InvalidCase(
        "same-service-both-sides",
        _set("candidate.service", "model-v1"),
        "stable and candidate must use different Services",
    ),
    InvalidCase(
        "stable-equals-candidate",
        _set("candidate.deployment", "model-v1"),
        "stable and candidate must be different Deployments",
    ),
    InvalidCase(
        "threshold-without-bounds",
        _set("analysis.metrics.0.slo", {}),
        "a threshold needs min, max or both",
    ),
    InvalidCase(
        "threshold-min-above-max",
        _set("analysis.metrics.0.slo", {"min": 2, "max": 1}),
        "min must not exceed max",
    ),
    InvalidCase(
        "abort-max-tighter-than-slo",
        _set("analysis.metrics.0.abort", {"max": 0.001}),
        "abort bounds must be no tighter than slo bounds",
    ),
    InvalidCase(
        "abort-min-tighter-than-slo",
        _set(
            "analysis.metrics.0",
            {
                "name": "accuracy",
                "query": "avg(accuracy)",
                "slo": {"min": 0.9},
                "abort": {"min": 0.95},
            },
        ),
        "abort bounds must be no tighter than slo bounds",
    ),
    InvalidCase(
        "metric-without-judgement",
        _set("analysis.metrics.0", {"name": "error-rate", "query": "up"}),
        "a metric needs slo, abort or compare",
    ),
    InvalidCase(
        "duplicate-metric-names",
        _set("analysis.metrics.1.name", "error-rate"),
        "Duplicate value",
        "metric names must be unique",
    ),
    InvalidCase(
        "interval-below-5s",
        _set("analysis.interval", "2s"),
        "interval must be at least 5s",
    ),
    InvalidCase(
        "duration-not-a-duration",
        _set("strategy.stages.1.duration", "ten minutes"),
        "should match",
        "String should match pattern",
    ),
    InvalidCase(
        "min-samples-without-samples-query",
        _set("analysis.samplesQuery", _DELETE),
        "minSamples needs analysis.samplesQuery",
    ),
    InvalidCase(
        "drift-warn-above-max",
        _set("driftGate.warn", 0.5),
        "warn must not exceed max",
    ),
    InvalidCase(
        "drift-two-references",
        _set("driftGate.reference", {"stable": {}, "configMapRef": {"name": "ref"}}),
        "reference needs exactly one of stable or configMapRef",
    ),
    InvalidCase(
        "drift-gate-without-analysis",
        lambda spec: (spec.pop("analysis"), spec["strategy"]["stages"][1].pop("minSamples")),
        "driftGate reads its histograms through analysis.prometheus",
    ),
    InvalidCase(
        "drift-without-features",
        _set("driftGate.features", []),
        "should have at least 1 items",
        "at least 1 item",
    ),
    InvalidCase(
        "misspelt-field",
        _set("strategy.stage", []),
        'unknown field "spec.strategy.stage"',
        "Extra inputs are not permitted",
    ),
    InvalidCase(
        "prometheus-address-not-a-url",
        _set("analysis.prometheus.address", "prometheus:9090"),
        "should match",
        "String should match pattern",
    ),
]
