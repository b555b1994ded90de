"""The stage state machine, driven through whole rollouts by a pure stand-in world."""

from __future__ import annotations

import itertools

import pytest
from world import T0, World, gateway_spec, replicas_spec

from modelrollout.api import ModelRolloutSpec
from modelrollout.api.status import HISTORY_LIMIT, DriftStatus, MetricStatus
from modelrollout.core.conditions import condition
from modelrollout.core.stages import candidate_replicas, effective_weight, rollout_identity
from modelrollout.core.types import (
    ConsumeAction,
    Judgement,
    Notify,
    RouteTarget,
    Scale,
    SetRoute,
    Workload,
)


def phase_is(*phases: str) -> object:
    return lambda w: w.status.phase in phases


def test_a_preset_walks_every_stage_and_succeeds() -> None:
    world = World(gateway_spec())
    world.run_until(phase_is("Succeeded"))
    assert world.written_weights == [1, 5, 25, 100]
    assert world.status.stage == 4
    assert world.status.weight == 100
    ready = condition(world.status.conditions, "Ready")
    assert ready is not None
    assert ready.status == "True"
    reasons = [h.reason for h in world.status.history]
    assert reasons == ["Started", "StageComplete", "StageComplete", "StageComplete", "Succeeded"]


def test_each_stage_lasts_at_least_its_duration() -> None:
    world = World(gateway_spec())
    world.run_until(phase_is("Succeeded"))
    starts = [h.time for h in world.status.history if h.to_phase == "Progressing"]
    assert world.status.finished_at is not None
    times = [t.timestamp() for t in starts] + [world.status.finished_at.timestamp()]
    assert all(later - earlier >= 30 for earlier, later in itertools.pairwise(times))


def test_the_candidate_must_be_ready_before_the_weight_moves() -> None:
    world = World(gateway_spec(), stable=Workload(10, 10, 10), candidate=Workload(10, 0, 0))
    for _ in range(5):
        world.tick()
    assert world.writes == []
    assert world.status.phase == "Progressing"
    assert world.status.stage == 0
    assert "waiting for the candidate: 0 of 1 replicas ready to take 1%" in world.status.message
    world.candidate = Workload(10, 1, 1)
    world.tick()
    assert world.status.stage == 1
    assert world.written_weights == [1]
    world.run_until(
        lambda w: w.status.stage == 3 or "waiting for the candidate" in w.status.message
    )
    assert world.status.stage == 2
    assert "1 of 3 replicas ready to take 25% at stage 3" in world.status.message
    assert world.written_weights == [1, 5]


def test_replicas_router_scales_the_candidate_up_before_the_stable_down() -> None:
    spec = ModelRolloutSpec.model_validate(
        {
            "stable": {"deployment": "v1"},
            "candidate": {"deployment": "v2"},
            "trafficRouting": {"replicas": {"totalReplicas": 10}},
            "strategy": {"preset": "1-5-25-100", "stageDuration": "10s"},
        }
    )
    world = World(spec, stable=Workload(10, 10, 10), candidate=Workload(0, 0, 0))
    world.tick()
    assert world.status.total_replicas == 10
    first = world.writes[-1]
    assert (first.weight, first.candidate_floor) == (0, 1)  # candidate up, stable untouched
    assert world.status.stage == 0
    world.candidate = Workload(1, 1, 1)
    world.tick()
    assert world.status.stage == 1
    assert world.status.effective_weight == 10.0
    assert world.status.weight_summary == "1% (~10%)"
    world.candidate = Workload(10, 10, 10)
    world.run_until(phase_is("Succeeded"))
    assert [candidate_replicas(10, w) for w in world.written_weights] == [0, 1, 1, 3, 10]


def test_a_replicas_rollback_grows_the_stable_before_the_candidate_shrinks() -> None:
    """Surge first: the rollback's one write sets the weight to 0 (the stable back to
    the whole fleet) while the candidate keeps its replicas; only once the stable's
    replicas are ready does the candidate go to zero."""
    world = World(replicas_spec(), stable=Workload(4, 4, 4), candidate=Workload(4, 4, 4))
    world.run_until(lambda w: w.status.stage == 3 and w.status.weight_confirmed)
    world.stable = Workload(4, 3, 3)  # 3 ready for the fleet of 4 left to it
    world.action = "abort"
    world.tick()
    assert world.status.phase == "RollingBack"
    assert (world.writes[-1].weight, world.writes[-1].candidate_floor) == (0, 25)
    for _ in range(3):  # the stable is not back yet: the candidate keeps serving
        world.tick()
    assert world.status.phase == "RollingBack"
    assert world.writes[-1].candidate_floor == 25
    world.stable = Workload(4, 4, 4)
    world.run_until(phase_is("RolledBack"))
    assert (world.writes[-1].weight, world.writes[-1].candidate_floor) == (0, 0)


def test_a_replicas_rollback_shrinks_the_candidate_after_the_surge_wait() -> None:
    world = World(replicas_spec(), stable=Workload(4, 4, 4), candidate=Workload(4, 4, 4))
    world.run_until(lambda w: w.status.stage == 2 and w.status.weight_confirmed)
    world.stable = Workload(4, 1, 1)  # the stable never becomes ready again
    world.action = "abort"
    world.run_until(phase_is("RolledBack"), seconds=5)
    assert world.writes[-1].candidate_floor == 0
    late = next(e for e in world.events if e.reason == "StableNotReady")
    assert "1 of 4 replicas ready after 60s" in late.message


def test_manual_approval_waits_then_promote_advances() -> None:
    spec = gateway_spec(
        strategy={
            "stages": [
                {"weight": 10, "duration": "5s", "approval": "Manual"},
                {"weight": 100, "duration": "5s"},
            ]
        }
    )
    world = World(spec)
    world.run_until(phase_is("Paused"))
    assert world.status.history[-1].reason == "AwaitingApproval"
    for _ in range(30):
        world.tick()
    assert world.status.phase == "Paused"
    assert world.written_weights == [10]
    world.action = "promote"
    decision = world.tick()
    assert ConsumeAction("promote") in decision.actions
    assert world.status.stage == 2
    assert world.written_weights == [10, 100]
    world.run_until(phase_is("Succeeded"))


def test_abort_sets_weight_zero_in_the_same_tick_then_rolls_back() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 3)
    world.action = "abort"
    decision = world.tick()
    assert world.status.phase == "RollingBack"
    routes = [a for a in decision.actions if isinstance(a, SetRoute)]
    assert [(r.target.weight, r.target.mirror) for r in routes] == [(0, False)]
    world.tick()
    assert world.status.phase == "RolledBack"
    stalled = condition(world.status.conditions, "Stalled")
    assert stalled is not None
    assert stalled.status == "True"
    assert any(e.type == "Warning" and e.reason == "Aborted" for e in world.events)


def rolled_back_from_stage_two() -> World:
    """A gateway rollout aborted at stage 2, run until it is RolledBack."""
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2)
    world.action = "abort"
    world.run_until(phase_is("RolledBack"))
    return world


def test_retry_starts_again_from_stage_one() -> None:
    world = rolled_back_from_stage_two()
    world.action = "retry"
    world.tick()
    assert world.status.stage == 1
    assert world.status.phase == "Progressing"
    world.run_until(phase_is("Succeeded"))
    assert world.written_weights == [1, 5, 0, 1, 5, 25, 100]


def test_terminal_phases_stay_put_without_retry_or_spec_change() -> None:
    world = rolled_back_from_stage_two()
    world.action = "promote"
    world.tick()
    assert world.status.phase == "RolledBack"
    assert any(e.reason == "ActionIgnored" for e in world.events)
    for _ in range(100):
        world.tick(10)
    assert world.status.phase == "RolledBack"
    world.generation = 2  # a spec change after a stop starts a new run
    world.tick()
    assert world.status.phase == "Progressing"
    assert world.status.rollout_generation == 2


def test_spec_paused_holds_and_resumes_on_the_same_stage_clock() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2)
    started = world.status.stage_started_at
    world.spec = world.spec.model_copy(update={"paused": True})
    for _ in range(60):
        world.tick()
    assert world.status.phase == "Paused"
    assert world.status.stage == 2
    world.spec = world.spec.model_copy(update={"paused": False})
    world.tick()
    assert world.status.stage == 3  # 60s of pause covered the 30s stage
    assert started != world.status.stage_started_at


def test_someone_elses_weight_change_is_reported_and_reasserted() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2 and w.status.weight_confirmed)
    assert world.route is not None
    world.route = world.route.__class__(50, False, 50, None)
    decision = world.tick()
    warnings = [a for a in decision.actions if getattr(a, "type", "") == "Warning"]
    assert [w.reason for w in warnings] == ["WeightOverridden"]
    assert "changed to 50% by someone else; restoring 5%" in warnings[0].message
    assert world.route.weight == 5
    world.tick()
    assert world.decisions[-1].actions == ()


def test_a_vanished_candidate_rolls_back_and_a_vanished_stable_pauses() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2)
    fork = world.fork()
    fork.stable = None
    fork.tick()
    assert fork.status.phase == "Paused"
    assert fork.status.history[-1].reason == "StableMissing"
    assert fork.status.weight == 5
    world.candidate = None
    world.tick()
    assert world.status.phase == "RollingBack"
    assert world.status.history[-1].reason == "CandidateMissing"


def test_a_malformed_route_fails_without_a_write() -> None:
    world = World(gateway_spec())
    world.route_problem = "HTTPRoute route rule 0 has no backendRef for Service v2"
    world.tick()
    assert world.status.phase == "Failed"
    assert world.writes == []
    stalled = condition(world.status.conditions, "Stalled")
    assert stalled is not None
    assert stalled.reason == "RoutingInvalid"
    assert "no backendRef for Service v2" in stalled.message


@pytest.mark.parametrize(
    ("verdict", "phase"),
    [("wait", "Progressing"), ("pause", "Paused"), ("rollback", "RollingBack")],
)
def test_the_judgement_holds_pauses_or_rolls_back(verdict: str, phase: str) -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2)
    world.judgement = Judgement(verdict, "AnalysisFailed", "error-rate 0.2 > 0.05")  # type: ignore[arg-type]
    for _ in range(60):
        world.tick()
        if world.status.phase == "RolledBack":
            break
    assert world.status.phase in (phase, "RolledBack")
    if verdict != "rollback":
        assert world.status.stage == 2
        assert world.written_weights == [1, 5]
    else:
        assert world.written_weights[-1] == 0


def test_min_samples_hold_the_stage_until_reached() -> None:
    spec = gateway_spec(
        strategy={"preset": "1-5-25-100", "stageDuration": "5s", "minSamples": 100},
        analysis={
            "prometheus": {"address": "http://p:9090"},
            "samplesQuery": "x",
            "interval": "5s",
        },
    )
    world = World(spec, judgement=Judgement("pass", samples=10))
    world.run_until(lambda w: w.status.stage == 1)
    for _ in range(20):
        world.tick()
    assert world.status.stage == 1
    assert "samples 10 of 100" in world.status.message
    world.judgement = Judgement("pass", samples=150)
    world.tick()
    assert world.status.stage == 2


def test_stable_is_scaled_down_once_after_the_delay() -> None:
    spec = gateway_spec(stable={"deployment": "v1", "service": "v1", "scaleDownDelay": "1m"})
    world = World(spec)
    world.run_until(phase_is("Succeeded"))
    world.tick(30)
    assert world.scales == []
    world.run_until(lambda w: bool(w.scales), seconds=10)
    for _ in range(10):
        world.tick(60)
    assert world.scales == [Scale("v1", 0)]


def test_a_new_target_starts_a_new_run_from_zero() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 3)
    world.spec = gateway_spec(candidate={"deployment": "v3", "service": "v3"})
    world.generation = 2
    world.tick()
    assert world.written_weights[-2:] == [0, 1]
    assert world.status.target_hash == rollout_identity(world.spec)
    assert world.status.history[-2].reason == "SpecChanged"


def test_a_threshold_change_applies_in_place() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 3)
    world.spec = world.spec.model_copy(update={"dry_run": False, "paused": False})
    world.generation = 2
    world.tick()
    assert world.status.stage == 3
    assert world.status.observed_generation == 2


def test_promote_full_goes_to_the_last_stage() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 1)
    world.action = "promote-full"
    world.tick()
    assert world.status.stage == 4
    assert world.written_weights == [1, 100]


def test_promote_full_still_waits_for_readiness() -> None:
    world = World(gateway_spec(), candidate=Workload(4, 1, 1))
    world.run_until(lambda w: w.status.stage == 1)
    world.action = "promote-full"
    world.tick()
    assert world.status.stage == 1
    assert "1 of 4 replicas ready to take 100%" in world.status.message


def test_a_mirror_stage_mirrors_at_zero_then_stops() -> None:
    spec = gateway_spec(
        strategy={
            "stages": [
                {"weight": 0, "mirror": True, "duration": "10s"},
                {"weight": 50, "duration": "10s"},
                {"weight": 100, "duration": "10s"},
            ]
        }
    )
    world = World(spec)
    world.run_until(lambda w: w.status.stage == 2)
    assert [(t.weight, t.mirror) for t in world.writes] == [(0, True), (50, False)]
    assert world.status.mirroring is False


def test_a_dry_run_mirrors_each_stage_share_and_serves_the_candidate_nothing() -> None:
    """Where the router can mirror, a dry run walks the stages with the candidate
    answering nobody: every write keeps its weight at 0 and mirrors the stage's share,
    and the end of the run stops the mirror."""
    world = World(gateway_spec(dryRun=True))
    world.run_until(phase_is("Succeeded"))
    assert all(t.weight == 0 for t in world.writes)
    mirrored = [t.mirror_percent for t in world.writes if t.mirror]
    assert mirrored == [1, 5, 25, 100]
    assert not world.writes[-1].mirror
    assert "dry run" in world.status.history[1].message
    assert world.status.weight == 100  # what it would serve, said in status


def test_a_dry_run_with_the_replicas_router_writes_nothing() -> None:
    world = World(replicas_spec(dryRun=True), route=RouteTarget(0, False, 0, 4))
    world.run_until(phase_is("Succeeded"))
    assert world.writes == []
    assert "dry run: no traffic moved" in world.status.history[1].message


def test_a_crash_after_the_status_write_is_repaired_without_repeating() -> None:
    """Killed between persisting a transition and applying it: the next pass sees the
    route lag the status and applies it, with no second transition or Event."""
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 1 and w.status.weight_confirmed)
    while world.status.stage == 1:
        decision = world.tick(perform=False)  # the pass that decides stage 2 crashes
        if world.status.stage == 1:
            for action in decision.actions:
                world.perform(action)
    events_before = len(world.events)
    decision = world.tick()
    assert [type(a).__name__ for a in decision.actions] == ["SetRoute"]
    assert len(world.events) == events_before
    world.run_until(phase_is("Succeeded"))
    assert world.written_weights == [1, 5, 25, 100]


def test_unknown_actions_are_refused_and_removed() -> None:
    world = World(gateway_spec())
    world.action = "promote-now"
    decision = world.tick()
    assert ConsumeAction("promote-now") in decision.actions
    assert any(e.reason == "UnknownAction" for e in world.events)


def test_stage_arithmetic() -> None:
    assert [candidate_replicas(10, w) for w in (0, 1, 5, 25, 50, 100)] == [0, 1, 1, 3, 5, 10]
    assert candidate_replicas(3, 34) == 2
    assert effective_weight(10, 1) == 10.0
    assert effective_weight(3, 34) == 66.67


def _drift(verdict: str, message: str, enforced: bool = True) -> DriftStatus:
    return DriftStatus.model_validate(
        {
            "verdict": verdict,
            "message": message,
            "enforced": enforced,
            "checkedAt": "2026-11-23T12:00:00Z",
        }
    )


def test_the_drift_condition_tracks_the_gate_and_announces_each_change_once() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 1)
    world.drift = _drift("warn", "drift warning: mean PSI 0.15", enforced=False)
    world.tick()
    world.tick()
    drift = condition(world.status.conditions, "Drift")
    assert drift is not None
    assert (drift.status, drift.reason) == ("True", "DriftWarning")
    warnings = [e for e in world.events if e.reason == "DriftWarning"]
    assert [e.message for e in warnings] == [
        "observe-only, not blocking: drift warning: mean PSI 0.15"
    ]
    assert world.status.drift is not None
    assert world.status.drift.verdict == "warn"
    world.drift = _drift("nodata", "no amount histogram series in the window: the gate holds")
    world.tick()
    assert [e.reason for e in world.events if e.reason.startswith("Drift")] == [
        "DriftWarning",
        "DriftNoData",
    ]
    world.drift = _drift("stable", "no drift: mean PSI 0.01")
    world.tick()
    drift = condition(world.status.conditions, "Drift")
    assert drift is not None
    assert (drift.status, drift.reason) == ("False", "NoDrift")


ANALYSIS = {"interval": "5s", "prometheus": {"address": "http://p:9090"}, "samplesQuery": "x"}


def test_a_stage_never_completes_on_checks_that_did_not_run() -> None:
    """After a pause in which nothing was queried, the first tick has no verdict:
    the stage waits for one, however long ago its duration ran out."""
    world = World(gateway_spec(analysis=ANALYSIS), judgement=Judgement("pass"))
    world.run_until(lambda w: w.status.stage == 1)
    world.judgement = None
    for _ in range(40):
        world.tick()
    assert world.status.stage == 1
    assert "waiting for this stage's checks to run" in world.status.message
    world.judgement = Judgement("pass")
    world.tick()
    assert world.status.stage == 2


def test_an_approval_stage_with_min_samples_waits_without_flapping() -> None:
    stages = [
        {"weight": 10, "duration": "5s", "minSamples": 10, "approval": "Manual"},
        {"weight": 100, "duration": "5s"},
    ]
    spec = gateway_spec(strategy={"stages": stages}, analysis=ANALYSIS)
    world = World(spec, judgement=Judgement("pass", samples=20))
    world.run_until(lambda w: w.status.phase == "Paused")
    assert world.status.history[-1].reason == "AwaitingApproval"
    entries, events = len(world.status.history), len(world.events)
    world.judgement = None  # nothing is queried while it waits for a person
    for _ in range(20):
        world.tick()
    assert world.status.phase == "Paused"
    assert (len(world.status.history), len(world.events)) == (entries, events)
    world.action = "promote"
    world.tick()
    assert world.status.stage == 2


@pytest.mark.parametrize(
    ("action", "waiting", "to_stage", "reason"),
    [
        ("promote", "1 of 3 replicas ready to take 25% at stage 3", 3, "Promoted"),
        ("promote-full", "1 of 10 replicas ready to take 100% at stage 4", 4, "PromotedFull"),
    ],
)
def test_a_promote_waits_for_the_candidates_readiness_instead_of_being_lost(
    action: str, waiting: str, to_stage: int, reason: str
) -> None:
    world = World(gateway_spec(), stable=Workload(10, 10, 10), candidate=Workload(10, 1, 1))
    world.run_until(lambda w: w.status.stage == 2)
    world.action = action
    world.tick()
    assert world.action is None  # consumed
    assert world.status.stage == 2
    assert waiting in world.status.message
    world.tick()
    world.tick()
    assert world.status.stage == 2
    world.candidate = Workload(10, 10, 10)
    world.tick()
    assert world.status.stage == to_stage
    assert world.status.history[-1].reason == reason
    world.tick(seconds=5)
    assert world.status.stage == to_stage  # that stage runs its course
    assert world.status.phase == "Progressing"


def test_history_keeps_the_last_fifty_transitions_oldest_first() -> None:
    world = World(gateway_spec(strategy={"stages": [{"weight": 100, "duration": "1h"}]}))
    world.run_until(lambda w: w.status.stage == 1)
    for _ in range(40):  # each pause and resume is a transition: 80 more entries
        world.action = "pause"
        world.tick()
        world.action = "resume"
        world.tick()
    history = world.status.history
    assert len(history) == HISTORY_LIMIT
    assert [h.reason for h in history[-2:]] == ["PausedByAction", "StageInProgress"]
    assert history[0].reason == "PausedByAction"  # "Started" and the first ones are gone
    assert [h.time for h in history] == sorted(h.time for h in history)
    assert sum(e.reason == "PausedByAction" for e in world.events) == 40  # announced each time


def test_pause_and_resume_actions_hold_the_weight_and_the_stage_clock_goes_on() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2)
    writes = len(world.writes)
    world.action = "pause"
    world.tick()
    assert (world.status.phase, world.status.manual_pause) == ("Paused", True)
    for _ in range(60):  # longer than the stage: still held
        world.tick()
    assert (world.status.stage, world.status.phase) == (2, "Paused")
    assert len(world.writes) == writes
    world.action = "resume"
    world.tick()
    assert (world.status.phase, world.status.manual_pause) == ("Progressing", False)
    world.run_until(lambda w: w.status.stage == 3)


def test_a_stage_judged_by_a_match_rate_leaves_the_copying_to_the_comparator() -> None:
    match = {"slo": {"min": 0.95}}
    spec = gateway_spec(
        strategy={
            "stages": [
                {"weight": 0, "mirror": True, "duration": "10s", "matchRate": match},
                {"weight": 100, "duration": "10s"},
            ]
        },
        analysis={"prometheus": {"address": "http://p.monitoring.svc:9090"}},
    )
    world = World(spec, judgement=Judgement("pass"))
    world.run_until(lambda w: w.status.stage == 1)
    assert world.status.mirroring is True  # what the comparator follows
    assert [(t.weight, t.mirror) for t in world.writes] == [(0, False)]


def notices(world: World) -> list[Notify]:
    return [n for d in world.decisions for n in d.notices]


def test_each_transition_is_told_once_in_order_with_its_sequence_number() -> None:
    world = World(gateway_spec())
    world.run_until(phase_is("Succeeded"))
    told = notices(world)
    assert [n.event for n in told] == [
        "Started", "StageAdvanced", "StageAdvanced", "StageAdvanced", "Succeeded",
    ]  # fmt: skip
    assert [n.sequence for n in told] == [1, 2, 3, 4, 5]
    assert world.status.transitions == 5


def test_a_rollback_is_told_with_its_cause_and_the_breached_check() -> None:
    world = World(gateway_spec())
    world.run_until(lambda w: w.status.stage == 2)
    breach = MetricStatus.model_validate(
        {"name": "error-rate", "value": 0.37, "abort": {"max": 0.2}, "verdict": "abort",
         "stage": 2, "checkedAt": T0}
    )  # fmt: skip
    world.status = world.status.model_copy(update={"analysis": [breach]})
    world.judgement = Judgement("rollback", "AbortThresholdBreached", "error-rate 0.37 > 0.2")
    world.run_until(phase_is("RolledBack"))
    last = notices(world)[-1]
    assert last.event == "RolledBack"
    details = dict(last.details)
    assert details["cause"].startswith("AbortThresholdBreached: rolling back at stage 2")
    assert (details["metric"], details["value"], details["bound"]) == (
        "error-rate",
        "0.37",
        "max 0.2",
    )


def test_waiting_for_approval_and_a_pause_are_told() -> None:
    spec = gateway_spec(strategy={"stages": [
        {"weight": 10, "duration": "5s", "approval": "Manual"}, {"weight": 100, "duration": "5s"},
    ]})  # fmt: skip
    world = World(spec)
    world.run_until(lambda w: w.status.phase == "Paused")
    world.action = "pause"
    world.tick()
    assert [n.event for n in notices(world)] == ["Started", "AwaitingApproval", "Paused"]
