"""End-to-end scenarios: real traffic through model servers, Prometheus judging it,
the operator moving weights. Each asserts on status, Events, the weights written to
the HTTPRoute, and the candidate's share of traffic as Prometheus itself saw it."""

from __future__ import annotations

import time
from typing import Any

from integration.conftest import (
    Api,
    Obj,
    Operator,
    RouteRecorder,
    condition,
    phase,
    stage,
    story,
)
from integration.scenario import gateway_weights

from .stack import CANDIDATE, FAULTS, LATENCY_SLO, ROUTE, Stack, rollout, stage_windows

FIVE_STAGES = {"preset": "5-10-25-50-100", "stageDuration": "10s", "minSamples": 30}
ALL_WEIGHTS = [(100, 0), (95, 5), (90, 10), (75, 25), (50, 50), (0, 100)]
SHARE_TOLERANCE = 2.0  # percentage points
# Two standard deviations on one of four features: its PSI is about 2.5, so the mean
# (the default aggregate) is well beyond max 0.25 whatever the noise of a short stage.
SHIFT = "amount=2"


def begin(
    api: Api, stack: Stack, strategy: Obj, candidate: dict[str, str] | None = None, **spec: Any
) -> RouteRecorder:
    stack.start(candidate)
    recorder = RouteRecorder(api, "httproute", ROUTE, gateway_weights)
    api.apply(rollout(stack.prometheus.url, strategy, **spec))
    return recorder


def weights(recorder: RouteRecorder) -> list[tuple[int, int]]:
    recorder.stop()
    return [(stable, candidate) for stable, candidate, _ in recorder.distinct()]


def assert_shares_follow_weights(stack: Stack, done: Obj) -> int:
    """Every stage of 5% and more: Prometheus' share within 2 points of the weight."""
    checked = 0
    for number, weight, start, end in stage_windows(done["status"]["history"]):
        if weight < 5:
            continue
        share = 100 * stack.share(CANDIDATE, start, end)
        assert abs(share - weight) <= SHARE_TOLERANCE, (
            f"stage {number}: the candidate served {share:.2f}% of requests at weight {weight}%"
        )
        checked += 1
    return checked


def fault(api: Api, **faults: str) -> None:
    """Change the candidate's running model servers, as a bad model would behave."""
    pairs = [f"{FAULTS[key]}={value}" for key, value in faults.items()]
    api.control_plane.kubectl(
        "annotate", "pods", "-l", f"deployment={CANDIDATE}", *pairs, "--overwrite",
        "-n", api.namespace,
    )  # fmt: skip


def test_happy_path_walks_five_stages_and_succeeds(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack, FIVE_STAGES)
    done = api.wait_phase(ROUTE, "Succeeded", "RolledBack", "Failed", timeout=300)
    assert phase(done) == "Succeeded", done["status"].get("message")
    assert weights(recorder) == ALL_WEIGHTS
    assert [h["reason"] for h in done["status"]["history"]] == [
        "Started", "StageComplete", "StageComplete", "StageComplete", "StageComplete", "Succeeded",
    ]  # fmt: skip
    verdicts = {m["name"]: m["verdict"] for m in done["status"]["analysis"]}
    assert verdicts == {"error-rate": "pass", "latency-p99": "pass"}
    assert done["status"]["drift"]["verdict"] == "stable"
    assert assert_shares_follow_weights(stack, done) == 5
    api.wait_events(ROUTE, lambda e: e["reason"] == "Succeeded", "Succeeded")
    ready = condition(done, "Ready")
    assert ready is not None
    assert ready["status"] == "True"


def test_a_latency_regression_rolls_back_at_the_stage_where_it_shows(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack, FIVE_STAGES)
    api.wait_rollout(ROUTE, lambda o: stage(o) == 2, "stage 2", 120)
    fault(api, added_latency="0.3")
    done = api.wait_phase(ROUTE, "RolledBack", "Succeeded", timeout=120)
    assert phase(done) == "RolledBack", story(done)
    cause = done["status"]["history"][-2]
    assert (cause["reason"], cause["stage"]) == ("FailureLimitReached", 2)
    assert "latency-p99" in cause["message"]
    assert f"slo.max {LATENCY_SLO:g}" in cause["message"]
    assert weights(recorder) == [(100, 0), (95, 5), (90, 10), (100, 0)]
    assert assert_shares_follow_weights(stack, done) >= 1
    api.wait_events(
        ROUTE, lambda e: e["reason"] == "AnalysisFailed" and "latency-p99" in e["message"],
        "AnalysisFailed for latency-p99",
    )  # fmt: skip


def test_an_error_spike_rolls_back_at_once(api: Api, operator: Operator, stack: Stack) -> None:
    recorder = begin(api, stack, FIVE_STAGES)
    api.wait_rollout(ROUTE, lambda o: stage(o) == 3, "stage 3", 150)
    fault(api, error_rate="0.6")
    done = api.wait_phase(ROUTE, "RolledBack", "Succeeded", timeout=60)
    assert phase(done) == "RolledBack", story(done)
    cause = done["status"]["history"][-2]
    assert (cause["reason"], cause["stage"]) == ("AbortThresholdBreached", 3)
    assert "error-rate" in cause["message"]
    assert weights(recorder) == [(100, 0), (95, 5), (90, 10), (75, 25), (100, 0)]
    time.sleep(6)
    now = time.time()
    assert stack.share(CANDIDATE, now - 4, now) == 0.0  # the traffic really left
    api.wait_events(ROUTE, lambda e: e["reason"] == "AbortThresholdBreached", "the abort")


def test_drift_on_one_feature_rolls_back_naming_it(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack, FIVE_STAGES, {FAULTS["feature_shift"]: SHIFT})
    done = api.wait_phase(ROUTE, "RolledBack", "Succeeded", timeout=120)
    assert phase(done) == "RolledBack", story(done)
    cause = done["status"]["history"][-2]
    assert cause["reason"] == "DriftDetected"
    assert "features: amount " in cause["message"]
    drift = {f["feature"]: f for f in done["status"]["drift"]["features"]}
    assert drift["amount"]["verdict"] == "drift"
    assert all(f["verdict"] == "stable" for name, f in drift.items() if name != "amount")
    assert weights(recorder)[-1] == (100, 0)
    api.wait_events(
        ROUTE, lambda e: e["reason"] == "DriftDetected" and "amount" in e["message"], "drift"
    )


def test_observe_only_drift_succeeds_with_a_warning(
    api: Api, operator: Operator, stack: Stack
) -> None:
    strategy = {
        "stages": [{"weight": w, "duration": "10s", "minSamples": 30} for w in (5, 25, 100)]
    }
    begin(api, stack, strategy, {FAULTS["feature_shift"]: SHIFT}, driftGate={"enforce": False})
    done = api.wait_phase(ROUTE, "Succeeded", "RolledBack", timeout=180)
    assert phase(done) == "Succeeded", story(done)
    assert done["status"]["drift"]["verdict"] == "drift"
    warned = condition(done, "Drift")
    assert warned is not None
    assert (warned["status"], warned["reason"]) == ("True", "DriftDetected")
    [event, *_] = api.wait_events(ROUTE, lambda e: e["reason"] == "DriftDetected", "a warning")
    assert event["type"] == "Warning"
    assert event["message"].startswith("observe-only, not blocking")
    assert assert_shares_follow_weights(stack, done) >= 2


def test_manual_approval_waits_then_promotes_on_the_annotation(
    api: Api, operator: Operator, stack: Stack
) -> None:
    stages = [
        {"weight": 10, "duration": "10s"},
        {"weight": 50, "duration": "5s", "approval": "Manual"},
        {"weight": 100, "duration": "5s"},
    ]
    recorder = begin(api, stack, {"stages": stages})
    waiting = api.wait_phase(ROUTE, "Paused", timeout=120)
    assert (stage(waiting), waiting["status"]["weight"]) == (2, 50)
    assert waiting["status"]["history"][-1]["reason"] == "AwaitingApproval"
    time.sleep(2 * 5)  # two analysis intervals: still waiting, still at 50%
    assert phase(api.rollout(ROUTE)) == "Paused"
    api.annotate(ROUTE, "promote")
    done = api.wait_phase(ROUTE, "Succeeded", timeout=60)
    assert "rollouts.mlops.io/action" not in done["metadata"].get("annotations", {})
    assert weights(recorder) == [(100, 0), (90, 10), (50, 50), (0, 100)]
    assert assert_shares_follow_weights(stack, done) >= 1


def test_a_mirror_stage_copies_traffic_to_the_candidate_at_weight_zero(
    api: Api, operator: Operator, stack: Stack
) -> None:
    stages = [
        {"weight": 0, "mirror": True, "duration": "15s", "minSamples": 30},
        {"weight": 100, "duration": "5s"},
    ]
    recorder = begin(api, stack, {"stages": stages})
    mirroring = api.wait_rollout(
        ROUTE, lambda o: (o.get("status") or {}).get("mirroring") is True, "mirror", 90
    )
    assert mirroring["status"]["weight"] == 0
    time.sleep(10)
    now = time.time()
    # every stable request is copied to the candidate, whose answers are discarded
    assert abs(100 * stack.share(CANDIDATE, now - 6, now) - 50) <= SHARE_TOLERANCE
    assert stack.driver is not None
    assert stack.driver.counts().mirrored.get(CANDIDATE, 0) > 0
    done = api.wait_phase(ROUTE, "Succeeded", timeout=90)
    recorder.stop()
    assert [(s, c, m) for s, c, m in recorder.distinct()][:2] == [(100, 0, False), (100, 0, True)]
    assert done["status"]["weight"] == 100


def test_a_dry_run_judges_the_candidate_on_mirrored_traffic_and_serves_it_nothing(
    api: Api, operator: Operator, stack: Stack
) -> None:
    stages = [
        {"weight": 25, "duration": "15s", "minSamples": 30},
        {"weight": 100, "duration": "10s", "minSamples": 30},
    ]
    recorder = begin(api, stack, {"stages": stages}, dryRun=True)
    api.wait_rollout(ROUTE, lambda o: stage(o) == 1, "stage 1", 90)
    time.sleep(10)
    now = time.time()
    # a copy of 25% of the stable's requests: 25 of every 125 requests served reach it
    assert abs(100 * stack.share(CANDIDATE, now - 6, now) - 20) <= SHARE_TOLERANCE
    done = api.wait_phase(ROUTE, "Succeeded", "RolledBack", "Failed", timeout=120)
    assert phase(done) == "Succeeded", story(done)
    judged = {m["name"]: (m["verdict"], m.get("value")) for m in done["status"]["analysis"]}
    assert judged["error-rate"] == ("pass", 0.0)  # a value read from mirrored traffic
    assert judged["latency-p99"][1] is not None
    assert done["status"]["drift"]["verdict"] == "stable"
    assert stack.driver is not None
    counts = stack.driver.counts()
    assert counts.sent.get(CANDIDATE, 0) == 0  # no client ever got a candidate answer
    assert counts.mirrored.get(CANDIDATE, 0) > 0
    recorder.wait_for((100, 0, False), timeout=30)  # the mirror stops after Succeeded
    recorder.stop()
    written = recorder.distinct()
    assert {(s, c) for s, c, _ in written} == {(100, 0)}
    assert [m for _, _, m in written] == [False, True, False]  # mirrored, then stopped


def test_the_operator_killed_mid_stage_resumes_where_it_was(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack, FIVE_STAGES)
    api.wait_rollout(ROUTE, lambda o: stage(o) == 2, "stage 2", 120)
    operator.kill()
    time.sleep(5)
    operator.start()
    done = api.wait_phase(ROUTE, "Succeeded", "RolledBack", timeout=300)
    assert phase(done) == "Succeeded", story(done)
    assert weights(recorder) == ALL_WEIGHTS
    stages = [h["stage"] for h in done["status"]["history"] if h["to"] == "Progressing"]
    assert stages == [1, 2, 3, 4, 5]  # none repeated, none skipped
    assert assert_shares_follow_weights(stack, done) >= 4


def test_prometheus_restarted_mid_stage_pauses_then_continues(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack, FIVE_STAGES)
    api.wait_rollout(ROUTE, lambda o: stage(o) == 2, "stage 2", 120)
    stack.prometheus.stop()
    blind = api.wait_phase(ROUTE, "Paused", timeout=30)
    unavailable = condition(blind, "AnalysisUnavailable")
    assert unavailable is not None
    assert unavailable["status"] == "True"
    assert stage(blind) == 2
    stack.prometheus.start()
    done = api.wait_phase(ROUTE, "Succeeded", "RolledBack", timeout=300)
    assert phase(done) == "Succeeded", story(done)
    assert weights(recorder) == ALL_WEIGHTS
    reasons = [h["reason"] for h in done["status"]["history"]]
    assert "AnalysisUnavailable" in reasons
    assert reasons.count("Started") == 1
