"""The API server, with the generated CRD, admits good rollouts and refuses bad ones
with a message that names the field and the rule."""

from __future__ import annotations

import json
import time

import kubernetes
import pytest

from invalid_rollouts import CASES, InvalidCase, valid_rollout
from testbed import ControlPlane
from testbed.paths import ROOT

from .conftest import GROUP, PLURAL, VERSION, Api

SAMPLES = ROOT / "manifests" / "samples"


def _apply(control_plane: ControlPlane, namespace: str, manifest: dict[str, object]) -> str:
    return control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def test_a_valid_rollout_is_admitted(control_plane: ControlPlane, api: Api) -> None:
    out = _apply(control_plane, api.namespace, valid_rollout("good"))
    assert "modelrollout.rollouts.mlops.io/good created" in out
    assert api.rollout("good")["spec"]["strategy"]["stages"][2]["approval"] == "Manual"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_an_invalid_rollout_is_refused_naming_the_problem(
    control_plane: ControlPlane, namespace: str, case: InvalidCase
) -> None:
    with pytest.raises(RuntimeError) as refused:
        _apply(control_plane, namespace, case.manifest(case.id))
    message = str(refused.value)
    assert case.api_error in message
    assert "spec" in message  # the field path, e.g. spec.strategy.stages
    listed = control_plane.kubectl("get", "mro", "-n", namespace, "-o", "name")
    assert listed.strip() == ""


def test_every_sample_applies_cleanly(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.kubectl("apply", "-n", namespace, "-f", str(SAMPLES))
    created = [line for line in out.splitlines() if line.endswith(" created")]
    assert len(created) == len(list(SAMPLES.glob("*.yaml"))) >= 5


def test_get_shows_the_printer_columns(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", str(SAMPLES / "istio-preset-1-5-25-100.yaml")
    )
    status = {
        "phase": "Progressing",
        "stage": 2,
        "stageCount": 4,
        "weight": 5,
        "stageSummary": "2/4",
        "weightSummary": "5%",
        "drift": {"aggregate": 0.042, "verdict": "stable", "checkedAt": "2026-11-23T12:00:00Z"},
    }
    kubernetes.client.CustomObjectsApi(k8s).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "churn-model",
        {"status": status},
        _content_type="application/merge-patch+json",
    )
    header, row = control_plane.kubectl("get", "mro", "-n", namespace).splitlines()
    assert header.split() == [
        "NAME",
        "STABLE",
        "CANDIDATE",
        "PHASE",
        "STAGE",
        "WEIGHT",
        "DRIFT",
        "AGE",
    ]
    assert row.split()[:7] == [
        "churn-model",
        "churn-v3",
        "churn-v4",
        "Progressing",
        "2/4",
        "5%",
        "0.042",
    ]
    by_category = control_plane.kubectl("get", "ml", "-n", namespace, "-o", "name")
    assert by_category.strip() == "modelrollout.rollouts.mlops.io/churn-model"


def test_the_status_schema_keeps_what_the_operator_writes(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    """Undeclared status fields would be pruned silently by the API server."""
    _apply(control_plane, namespace, valid_rollout("kept"))
    status = {
        "phase": "Paused",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Reconciling",
                "status": "True",
                "reason": "AwaitingApproval",
                "message": "stage 3 waits for promote",
                "lastTransitionTime": "2026-11-23T12:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "analysis": [
            {
                "name": "latency",
                "verdict": "fail",
                "value": 0.31,
                "slo": {"max": 0.25},
                "consecutiveFailures": 2,
                "checkedAt": "2026-11-23T12:00:00Z",
                "pValue": 0.001,
                "effect": 1.3,
            }
        ],
        "samples": {"count": 150, "required": 200, "ratePerSecond": 2.5, "etaSeconds": 20},
        "history": [
            {
                "time": "2026-11-23T12:00:00Z",
                "from": "Progressing",
                "to": "Paused",
                "stage": 3,
                "weight": 50,
                "reason": "AwaitingApproval",
                "message": "stage 3 needs approval",
            }
        ],
    }
    custom = kubernetes.client.CustomObjectsApi(k8s)
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "kept",
        {"status": status},
        _content_type="application/merge-patch+json",
    )
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "kept")
    assert {k: stored["status"][k] for k in status} == status


@pytest.mark.parametrize(
    ("field", "words"),
    [
        (
            "modelrollout.spec.strategy.stages",
            ["Weights increase strictly", "minSamples", "approval", "mirror"],
        ),
        (
            "modelrollout.spec.analysis.metrics",
            ["exactly one sample", "{{window}}", "abort", "compare"],
        ),
        ("modelrollout.spec.driftGate", ["population stability index", "confidence", "enforce"]),
    ],
)
def test_kubectl_explain_teaches_the_field(
    control_plane: ControlPlane, field: str, words: list[str]
) -> None:
    text = " ".join(_explain(control_plane, field).split()).lower()
    for word in words:
        assert word.lower() in text


def _explain(control_plane: ControlPlane, field: str, timeout: float = 30.0) -> str:
    """The API server publishes a new CRD's OpenAPI a few seconds after Established."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return control_plane.kubectl("explain", field)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_short_name_works(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.kubectl("get", "mro", "-n", namespace)
    assert "No resources found" in out or out == ""
