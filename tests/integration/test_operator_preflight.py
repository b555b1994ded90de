"""The operator, as a real process on the real API server, checks what the schema
cannot: that the targets exist and that no other rollout claims them."""

from __future__ import annotations

import signal
import time

from . import objects
from .conftest import Api, Operator, condition, phase

GATEWAY = {"gatewayAPI": {"httpRoute": "model"}}


def _gateway_rollout(name: str = "model") -> dict[str, object]:
    spec = objects.rollout(name, "model-v1", "model-v2", GATEWAY)
    spec["spec"]["stable"]["service"] = "model-v1"  # type: ignore[index]
    spec["spec"]["candidate"]["service"] = "model-v2"  # type: ignore[index]
    return spec


def _targets() -> list[dict[str, object]]:
    return [
        *objects.targets(),
        objects.http_route("model", "model-v1", "model-v2"),
    ]


def test_a_missing_deployment_fails_the_rollout_naming_it(api: Api, operator: Operator) -> None:
    api.apply(
        objects.deployment("model-v1"),
        objects.rollout("r", "model-v1", "model-v2", {"replicas": {}}),
    )
    obj = api.wait_rollout("r", lambda o: phase(o) == "Failed", "phase Failed")
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "TargetNotFound")
    assert "Deployment model-v2 not found" in stalled["message"]
    assert "model-v1" not in stalled["message"]
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    api.wait_events(
        "r",
        lambda e: (
            (e["type"], e["reason"]) == ("Warning", "TargetNotFound")
            and "Deployment model-v2 not found" in e["message"]
        ),
        "Warning TargetNotFound naming model-v2",
    )


def test_everything_present_makes_the_rollout_pending(api: Api, operator: Operator) -> None:
    api.apply(*_targets(), _gateway_rollout())
    obj = api.wait_phase("model", "Progressing")
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    assert stalled["status"] == "False"
    reconciling = condition(obj, "Reconciling")
    assert reconciling is not None
    assert reconciling["status"] == "True"
    assert obj["status"]["stageSummary"].endswith("/4")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1


def test_a_target_created_later_is_picked_up(api: Api, operator: Operator) -> None:
    route_and_rollout = [_targets()[-1], _gateway_rollout()]
    api.apply(*route_and_rollout)
    obj = api.wait_rollout("model", lambda o: phase(o) == "Failed", "phase Failed")
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    for missing in (
        "Deployment model-v1",
        "Deployment model-v2",
        "Service model-v1",
        "Service model-v2",
    ):
        assert f"{missing} not found" in stalled["message"]
    route_before = api.get("httproute", "model")
    time.sleep(3)
    route_later = api.get("httproute", "model")
    assert route_later["metadata"]["resourceVersion"] == route_before["metadata"]["resourceVersion"]
    api.apply(*_targets()[:-1])
    started = api.wait_rollout(
        "model", lambda o: o.get("status", {}).get("stage") == 1, "stage 1", 60
    )
    assert started["status"]["weight"] == 1
    weights = [
        b["weight"] for b in api.get("httproute", "model")["spec"]["rules"][0]["backendRefs"]
    ]
    assert weights == [99, 1]


def test_observed_generation_follows_spec_changes(api: Api, operator: Operator) -> None:
    api.apply(*_targets(), _gateway_rollout())
    api.wait_phase("model", "Progressing")
    changed = _gateway_rollout()
    changed["spec"]["strategy"] = {"preset": "5-10-25-50-100"}  # type: ignore[index]
    api.apply(changed)
    obj = api.wait_rollout(
        "model",
        lambda o: o["metadata"]["generation"] == 2 and o["status"]["observedGeneration"] == 2,
        "observedGeneration 2",
    )
    assert obj["status"]["stageCount"] == 5
    assert all(c["observedGeneration"] == 2 for c in obj["status"]["conditions"])


def test_a_second_rollout_on_the_same_route_is_refused(api: Api, operator: Operator) -> None:
    api.apply(*_targets(), _gateway_rollout("first"))
    api.wait_phase("first", "Progressing")
    second = _gateway_rollout("second")
    second["spec"]["candidate"] = {"deployment": "model-v3", "service": "model-v3"}  # type: ignore[index]
    api.apply(objects.deployment("model-v3"), objects.service("model-v3"), second)
    obj = api.wait_rollout("second", lambda o: phase(o) == "Failed", "second Failed")
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "ClaimConflict"
    assert "HTTPRoute model is already claimed by ModelRollout first" in stalled["message"]
    assert "Deployment model-v1 is already claimed by ModelRollout first" in stalled["message"]
    assert phase(api.rollout("first")) == "Progressing"


def test_sigterm_stops_the_operator_gracefully(api: Api, operator: Operator) -> None:
    api.apply(*_targets(), _gateway_rollout())
    api.wait_phase("model", "Progressing")
    proc = operator.proc
    assert proc.popen is not None
    proc.popen.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = proc.popen.wait(timeout=30)
    assert code == 0, proc.tail()
    assert time.monotonic() - started < 30
    log = proc.log.read_text()
    assert "Traceback" not in log
