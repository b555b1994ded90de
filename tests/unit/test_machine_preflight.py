"""Preflight decisions of the pure state machine: missing targets and claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from invalid_rollouts import valid_rollout
from modelrollout.api import ModelRolloutSpec, ModelRolloutStatus
from modelrollout.core.conditions import condition
from modelrollout.core.machine import step
from modelrollout.core.targets import Claimant, ObjectRef, claim_conflicts, claimed_objects
from modelrollout.core.types import EmitEvent, Observations, RouteObservation, Workload

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SPEC = ModelRolloutSpec.model_validate(valid_rollout()["spec"])
ROUTE = RouteObservation(matches=True, weight=0.0)


def test_a_missing_deployment_fails_with_stalled_naming_it() -> None:
    missing = Observations(generation=3, missing=("Deployment model-v2",))
    decision = step(SPEC, ModelRolloutStatus(), missing, T0)
    status = decision.status
    assert status.phase == "Failed"
    assert status.observed_generation == 3
    stalled = condition(status.conditions, "Stalled")
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "TargetNotFound")
    assert "Deployment model-v2 not found" in stalled.message
    assert stalled.observed_generation == 3
    ready = condition(status.conditions, "Ready")
    assert ready is not None
    assert ready.status == "False"
    assert decision.actions == (EmitEvent("Warning", "TargetNotFound", status.message),)
    assert status.weight == 0
    assert status.history[-1].to_phase == "Failed"


def test_the_same_observation_again_changes_nothing_and_posts_nothing() -> None:
    missing = Observations(generation=1, missing=("Deployment model-v2",))
    first = step(SPEC, ModelRolloutStatus(), missing, T0).status
    again = step(SPEC, first, missing, T0 + timedelta(seconds=10))
    assert not again.changed
    assert again.actions == ()
    assert again.status == first


def test_a_fixed_target_is_picked_up_without_touching_the_spec() -> None:
    failed = step(SPEC, ModelRolloutStatus(), Observations(1, ("Deployment model-v2",)), T0)
    later = T0 + timedelta(seconds=10)
    found = Observations(1, stable=Workload(2, 2, 2), candidate=Workload(2, 0, 0), route=ROUTE)
    pending = step(SPEC, failed.status, found, later)
    assert pending.status.phase == "Progressing"
    assert "waiting for the candidate: 0 of 1 replicas" in pending.status.message
    stalled = condition(pending.status.conditions, "Stalled")
    assert stalled is not None
    assert stalled.status == "False"
    assert stalled.last_transition_time == later
    assert [(h.from_phase, h.to_phase) for h in pending.status.history] == [
        ("Pending", "Failed"),
        ("Failed", "Progressing"),
    ]
    assert pending.actions[0].type == "Normal"


def test_a_failure_that_is_not_preflight_is_not_undone_by_observations() -> None:
    status = ModelRolloutStatus()
    invalid = step(SPEC, status, Observations(1, ("Deployment x",)), T0).status
    for c in invalid.conditions:
        if c.type == "Stalled":
            c.reason = "InvalidQuery"
    decision = step(SPEC, invalid, Observations(1), T0)
    assert decision.status.phase == "Failed"
    assert decision.actions == ()


def test_a_claim_conflict_fails_the_newer_rollout() -> None:
    decision = step(
        SPEC,
        ModelRolloutStatus(),
        Observations(1, conflicts=("HTTPRoute model is already claimed by ModelRollout a",)),
        T0,
    )
    stalled = condition(decision.status.conditions, "Stalled")
    assert stalled is not None
    assert stalled.reason == "ClaimConflict"
    assert "ModelRollout a" in stalled.message


def test_claims_go_to_the_started_then_the_older_rollout() -> None:
    route = ObjectRef("HTTPRoute", "model")
    old_pending = Claimant(not_started=True, created="2026-01-01T00:00:00Z", name="old")
    new_pending = Claimant(not_started=True, created="2026-02-01T00:00:00Z", name="new")
    new_started = Claimant(not_started=False, created="2026-02-01T00:00:00Z", name="new")
    claimants = {route: [old_pending, new_pending]}
    assert claim_conflicts(old_pending, [route], claimants) == []
    assert claim_conflicts(new_pending, [route], claimants) == [
        "HTTPRoute model is already claimed by ModelRollout old"
    ]
    assert claim_conflicts(old_pending, [route], {route: [old_pending, new_started]}) == [
        "HTTPRoute model is already claimed by ModelRollout new"
    ]


def test_claimed_objects_are_both_deployments_and_the_routing_object() -> None:
    assert claimed_objects(SPEC) == [
        ObjectRef("Deployment", "model-v1"),
        ObjectRef("Deployment", "model-v2"),
        ObjectRef("HTTPRoute", "model"),
    ]
