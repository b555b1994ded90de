"""The invariants over hand-written histories: a correct one passes, and each kind of
mistake the soak looks for is caught. And the plan is a function of its seed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import get_args

from chaos.invariants import Applied, Evidence, OperatorRun, check, writer
from chaos.plan import PROFILES, Fault, FaultKind, Plan, RolloutPlan, make_plan
from chaos.record import DeploymentVersion, RolloutVersion, RouteVersion

HEALTHY = RolloutPlan("r000", "healthy", ((10, 12.0), (100, 3.0)), None, False, 1)
BAD = RolloutPlan("r001", "error-spike", ((10, 12.0), (50, 12.0), (100, 3.0)), 2, True, 2)
PLAN = Plan(1, PROFILES["ci"], (HEALTHY, BAD))
OPERATOR = {"chaos-soak": "t0", "modelrollout-operator": "t1"}


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def v(name: str, rev: int, seen: float, phase: str, stage: int, weight: int,
      reason: str = "", at: float | None = None) -> RolloutVersion:  # fmt: skip
    last = {"reason": reason, "time": stamp(at if at is not None else seen)} if reason else None
    return RolloutVersion(rev, seen, name, phase, stage, weight, last, None)


def route(name: str, rev: int, seen: float, stable: int, candidate: int,
          managers: dict[str, str | None] | None = None) -> RouteVersion:  # fmt: skip
    return RouteVersion(rev, seen, name, stable, candidate, managers or OPERATOR)


def clean() -> Evidence:
    return Evidence(
        plan=PLAN,
        rollouts=[
            v("r000", 10, 100.2, "Pending", 0, 0),
            v("r001", 11, 100.3, "Pending", 0, 0),
            v("r000", 20, 110.5, "Progressing", 1, 10, "Started", 110),
            v("r001", 22, 110.6, "Progressing", 1, 10, "Started", 110),
            v("r000", 30, 123.4, "Progressing", 2, 100, "StageComplete", 123),
            v("r001", 32, 125.3, "Progressing", 2, 50, "StageComplete", 125),
            v("r000", 40, 127.0, "Succeeded", 2, 100, "Succeeded", 127),
            v("r001", 41, 130.2, "RollingBack", 2, 0, "AbortThresholdBreached", 130),
            v("r001", 43, 131.0, "RolledBack", 2, 0, "RolledBack", 131),
        ],
        routes=[
            route("r000", 12, 100.0, 100, 0, {"chaos-soak": "t0"}),
            route("r001", 13, 100.1, 100, 0, {"chaos-soak": "t0"}),
            route("r000", 21, 110.6, 90, 10),
            route("r001", 23, 110.7, 90, 10),
            route("r000", 31, 123.5, 0, 100),
            route("r001", 33, 125.4, 50, 50),
            route("r001", 42, 130.3, 100, 0),
        ],
        deployments=[
            DeploymentVersion(5, 99.0, "r001-v2", 1),
            DeploymentVersion(6, 99.0, "r001-v1", 1),
            DeploymentVersion(50, 137.0, "r001-v2", 0),
        ],
        applied=[Applied(Fault(10.0, "prometheus-kill", duration=9), started=111, ended=120)],
        runs=[
            OperatorRun(
                started=90,
                scraped=140,
                rollbacks={("r001", "AbortThresholdBreached"): 1},
                phases={"r000": "Succeeded", "r001": "RolledBack"},
                weights={"r000": 100, "r001": 0},
            )
        ],
        created={"r000": 100.0, "r001": 100.0},
        triggered={"r001": (2, 125.5)},
        harness_routes={12, 13},
        finished=150.0,
    )


def test_a_correct_history_has_no_violation() -> None:
    assert check(clean()) == []


def test_a_healthy_candidate_rolled_back_is_a_mistake() -> None:
    e = clean()
    e.rollouts.append(v("r000", 44, 132, "RollingBack", 2, 0, "AbortThresholdBreached", 132))
    assert any("r000 (healthy)" in x for x in check(e))


def test_a_bad_candidate_given_100_percent_by_the_operator_is_caught() -> None:
    e = clean()
    e.routes.append(route("r001", 34, 126.0, 0, 100))
    found = check(e)
    assert any("bad candidate given 100%" in x for x in found)
    assert any("above the stored status' 50%" in x for x in found)


def test_a_rollback_for_another_reason_or_at_another_stage_is_caught() -> None:
    e = clean()
    e.rollouts[7] = v("r001", 41, 130.2, "RollingBack", 2, 0, "NoDataPolicy", 130)
    e.triggered["r001"] = (1, 111.0)
    found = check(e)
    assert any("rolled back for NoDataPolicy, not its own fault" in x for x in found)
    assert any("went bad at stage 1, rolled back at stage 2" in x for x in found)


def test_a_skipped_stage_and_a_weight_off_its_stage_are_caught() -> None:
    e = clean()
    e.rollouts[5] = v("r001", 32, 125.3, "Progressing", 3, 50, "StageComplete", 125)
    found = check(e)
    assert any("stage 1 -> 3" in x for x in found)
    assert any("weight 50 at stage 3" in x for x in found)


def test_a_move_decided_inside_an_unreadable_window_is_caught() -> None:
    e = clean()
    e.applied.append(Applied(Fault(20, "proxy-stall", duration=3), started=124.0, ended=127.0))
    assert any("r001@32: weight moved to 50" in x for x in check(e))


def test_a_move_whose_pass_began_before_the_outage_is_not() -> None:
    e = clean()
    e.applied.append(Applied(Fault(20, "proxy-reset", duration=3), started=125.1, ended=128.0))
    assert check(e) == []


def test_a_move_is_timed_from_when_its_pass_read_prometheus() -> None:
    """The decision is dated when the evidence is in (r001@32 at 125): a pass that read
    before the window began did not move on a blind read; one that read inside did."""
    for read_at, caught in ((123.0, False), (124.0, True)):
        e = clean()
        e.rollouts = [
            dataclasses.replace(r, read_at=read_at) if r.revision == 32 else r for r in e.rollouts
        ]
        e.applied.append(Applied(Fault(20, "proxy-stall", duration=4), started=123.5, ended=127.0))
        assert any("r001@32: weight moved to 50" in x for x in check(e)) is caught


def test_a_rollout_past_its_bound_is_caught() -> None:
    e = clean()
    e.created["r001"] = 0.0  # ended 131s later; its bound is about 110s
    assert any(x.startswith("r001: ended after 131s, bound") for x in check(e))


def test_rollbacks_the_metrics_missed_are_caught_unless_a_kill_cut_them_off() -> None:
    e = clean()
    e.runs[0].rollbacks = {}
    assert any("modelrollout_rollbacks_total" in x for x in check(e))
    e.runs[0].scraped = 129.0  # read before the rollback, then killed
    e.runs.append(dataclasses.replace(e.runs[0], started=135.0, scraped=140.0))
    assert check(e) == []


def test_final_gauges_that_disagree_are_caught() -> None:
    e = clean()
    e.runs[0].phases["r000"] = "Progressing"
    assert any("r000: gauges say phase Progressing" in x for x in check(e))


def test_scaling_the_wrong_side_is_caught() -> None:
    e = clean()
    e.deployments.append(DeploymentVersion(51, 138.0, "r001-v1", 0))
    assert any("deployment r001-v1@51: replicas 1 -> 0" in x for x in check(e))


def test_an_edit_by_someone_else_left_in_place_is_caught() -> None:
    e = clean()
    flux = {**OPERATOR, "kustomize-controller": "t2"}
    e.routes.append(route("r000", 35, 124.0, 100, 0, flux))
    e.applied.append(
        Applied(Fault(24, "route-edit", how="flux-ssa"), 124.0, 124.0, "r000", revision=35)
    )
    assert any("route r000: the edit @35 (flux-ssa) stayed" in x for x in check(e))
    e.routes.append(route("r000", 36, 124.5, 0, 100, {**OPERATOR, "modelrollout-operator": "t3"}))
    assert check(e) == []


def test_a_write_is_the_operators_unless_a_foreign_manager_wrote_it() -> None:
    before = route("r000", 1, 0, 90, 10, {"kubectl-patch": "t1", "modelrollout-operator": "t0"})
    patched = route("r000", 2, 0, 50, 50, {"kubectl-patch": "t2", "modelrollout-operator": "t0"})
    taken = route("r000", 3, 0, 90, 10, {"modelrollout-operator": "t3"})  # patch lost its fields
    assert writer(patched, before, set()) == "harness"
    assert writer(taken, patched, set()) == "operator"
    assert writer(taken, None, set()) == "harness"  # the first version is the creation


def test_the_plan_is_a_function_of_its_seed() -> None:
    soak = PROFILES["soak"]
    plan = make_plan(7, 100, soak)
    assert plan == make_plan(7, 100, soak)
    assert plan.describe() == make_plan(7, 100, soak).describe()
    assert plan != make_plan(8, 100, soak)
    assert sum(r.bad for r in plan.rollouts) == 45
    assert {r.kind for r in plan.rollouts} == {"healthy", "error-spike", "latency", "drift"}
    for r in plan.rollouts:  # bad before the last stage, which alone is 100%
        assert [w for w, _ in r.stages][-1] == 100
        assert r.bad_stage is None or 1 <= r.bad_stage < len(r.stages)
    kinds = [f.kind for f in plan.faults]
    assert set(kinds) == set(get_args(FaultKind))
    assert [f.at for f in plan.faults] == sorted(f.at for f in plan.faults)
    assert kinds.count("operator-kill") == 6
    ci = make_plan(1414, 10, PROFILES["ci"])
    assert {f.kind for f in ci.faults} == set(get_args(FaultKind))
    assert all(8 <= f.duration <= 15 for f in ci.faults if f.kind == "prometheus-kill")


def test_route_edits_are_timed_by_a_stage_in_flight() -> None:
    """Each edit waits for its target's stage: below 100% and before it goes bad, for
    less than half the stage, so it lands while the rollout runs."""
    for seed, n, profile in ((7, 100, "soak"), (1414, 10, "ci"), (3, 10, "ci")):
        plan = make_plan(seed, n, PROFILES[profile])
        by_name = {r.name: r for r in plan.rollouts}
        edits = [f for f in plan.faults if f.kind == "route-edit"]
        assert len(edits) == round(PROFILES[profile].faults_per_100["route-edit"] * n / 100)
        assert len({f.target for f in edits}) == len(edits)
        assert {f.how for f in edits} == {"flux-ssa", "kubectl-patch"}
        for f in edits:
            target = by_name[f.target]
            assert 1 <= f.stage < (target.bad_stage or len(target.stages))
            assert target.stages[f.stage - 1][0] < 100
            assert 1.0 <= f.into <= target.stages[f.stage - 1][1] / 2
