"""Gate checks in the pure machine: before the first traffic, before the last stage,
after it; retries, timeouts and KPIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from world import World, gateway_spec

from modelrollout.api.spec import Checks
from modelrollout.core.checks import job_name, job_state, kpis_of, running
from modelrollout.core.types import CheckObservation, RunCheck, SetRoute, StopCheck

POD = {"spec": {"containers": [{"name": "eval", "image": "eval:1"}]}}
JOB = {"template": {"template": POD}}
AUC = {"kpis": [{"name": "auc", "min": 0.8}]}
STAGES = {"stages": [{"weight": 10, "duration": "10s"}, {"weight": 100, "duration": "10s"}]}


def spec_with(**checks: Any) -> Any:
    return gateway_spec(strategy=STAGES, checks=checks)


def job(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "job": {**JOB, **extra.pop("job", {})}, **extra}


def seen(world: World, state: str, **extra: Any) -> None:
    """The adapters' view of every running attempt this tick."""
    world.checks = tuple(
        CheckObservation(c.point, c.name, c.attempt, state, **extra)  # type: ignore[arg-type]
        for c in world.status.checks
        if c.phase == "Running"
    )


def starts(world: World) -> list[RunCheck]:
    return [a for d in world.decisions for a in d.actions if isinstance(a, RunCheck)]


def test_a_pre_rollout_job_gates_the_first_traffic() -> None:
    world = World(spec_with(preRollout=[job("backtest", job=AUC)]))
    world.tick()
    assert world.status.phase == "Pending"
    assert world.writes == []
    assert [(r.run.point, r.run.check.name, r.run.attempt) for r in starts(world)] == [
        ("preRollout", "backtest", 1)
    ]
    seen(world, "running")
    for _ in range(3):
        world.tick()
    assert (world.status.stage, world.writes) == (0, [])
    seen(world, "succeeded", kpis={"auc": 0.91}, job="backtest-job")
    world.tick()
    entry = world.status.checks[0]
    assert (entry.phase, entry.job) == ("Succeeded", "backtest-job")
    assert [(k.name, k.value, k.verdict) for k in entry.kpis] == [("auc", 0.91, "pass")]
    world.checks = ()
    world.tick()
    assert world.status.stage == 1
    assert len(starts(world)) == 1  # started once, however many ticks it ran


def test_a_kpi_below_its_bound_fails_the_rollout_before_any_traffic() -> None:
    world = World(spec_with(preRollout=[job("backtest", job=AUC)]))
    world.tick()
    seen(world, "succeeded", kpis={"auc": 0.74}, logs="kubectl logs -n ns job/x")
    world.tick()
    assert world.status.phase == "Failed"
    assert world.status.history[-1].reason == "CheckFailed"
    assert "auc 0.74 < min 0.8" in world.status.message
    assert "kubectl logs -n ns job/x" in world.status.message
    assert "no traffic was moved" in world.status.message
    assert world.writes == []
    assert any(e.reason == "CheckFailed" for e in world.events)


def test_a_kpi_not_reported_fails_rather_than_passes() -> None:
    world = World(spec_with(preRollout=[job("backtest", job=AUC)]))
    world.tick()
    seen(world, "succeeded", kpis=None)
    world.tick()
    assert world.status.phase == "Failed"
    assert "wrote no KPIs" in world.status.message


def test_a_failed_attempt_is_retried_then_the_gate_fails() -> None:
    world = World(spec_with(preRollout=[job("backtest", retries=1)]))
    world.tick()
    seen(world, "failed", message="Job failed: BackoffLimitExceeded")
    world.tick()
    assert [r.run.attempt for r in starts(world)] == [1, 2]
    assert world.status.checks[0].attempt == 2
    assert world.status.phase == "Pending"
    seen(world, "failed", message="Job failed: BackoffLimitExceeded")
    world.tick()
    assert world.status.phase == "Failed"
    assert any(e.reason == "CheckRetried" for e in world.events)


def test_an_attempt_past_its_timeout_is_stopped_and_fails() -> None:
    world = World(spec_with(preRollout=[job("backtest", timeout="30s")]))
    world.tick()
    seen(world, "running")
    world.run_until(lambda w: w.status.phase == "Failed", limit=60)
    stops = [a for d in world.decisions for a in d.actions if isinstance(a, StopCheck)]
    assert [(s.run.check.name, s.run.attempt) for s in stops] == [("backtest", 1)]
    assert "timed out after 30s" in world.status.message


def test_a_failed_pre_promotion_check_rolls_back_before_the_last_stage() -> None:
    hook = {"name": "approve", "webhook": {"url": "http://approver.ml.svc/check"}}
    world = World(spec_with(prePromotion=[hook]))
    world.run_until(lambda w: bool(w.status.checks))
    assert (world.status.stage, world.status.weight) == (1, 10)
    seen(world, "failed", message="HTTP 409: model card missing")
    world.run_until(lambda w: w.status.phase == "RolledBack")
    assert world.written_weights == [10, 0]
    rollback = next(h for h in world.status.history if h.to_phase == "RollingBack")
    assert rollback.reason == "CheckFailed"
    assert "prePromotion check approve failed: HTTP 409: model card missing" in rollback.message


def test_a_post_promotion_failure_is_reported_or_rolls_back_as_asked() -> None:
    hook = {"name": "smoke", "webhook": {"url": "http://smoke.ml.svc/"}}
    reported = World(spec_with(postPromotion=[hook]))
    reported.run_until(lambda w: w.status.stage == 2 and bool(w.status.checks))
    assert reported.status.phase == "Progressing"
    seen(reported, "failed", message="HTTP 500")
    reported.tick()
    assert reported.status.phase == "Succeeded"
    assert any(e.reason == "PostPromotionCheckFailed" for e in reported.events)
    rolled = World(spec_with(postPromotion=[hook], postPromotionFailure="Rollback"))
    rolled.run_until(lambda w: w.status.stage == 2 and bool(w.status.checks))
    seen(rolled, "failed", message="HTTP 500")
    rolled.run_until(lambda w: w.status.phase == "RolledBack")
    assert rolled.written_weights[-1] == 0


def retried_after_a_failed_backtest(message: str, wait: timedelta = timedelta()) -> World:
    """A preRollout backtest failed the rollout; `wait` later, the user retries."""
    world = World(spec_with(preRollout=[job("backtest")]))
    world.tick()
    seen(world, "failed", message=message)
    world.tick()
    assert world.status.phase == "Failed"
    world.checks = ()
    world.now += wait
    world.action = "retry"
    world.tick()
    return world


def test_a_restart_clears_the_checks_of_the_last_run() -> None:
    world = retried_after_a_failed_backtest("nope")
    assert [c.attempt for c in world.status.checks] == [1]
    assert world.status.checks[0].phase == "Running"
    assert not [
        a for a in world.decisions[-1].actions if isinstance(a, SetRoute) and a.target.weight
    ]


def test_job_names_are_stable_labels_per_attempt() -> None:
    at = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)  # 1796126405 s, "tpd805" in base 36
    assert job_name("fraud.v2", "preRollout", "backtest", 1, at) == "fraud-v2-pre-backtest-1-tpd805"
    long = job_name("r" * 60, "prePromotion", "c" * 40, 3, at)
    assert len(long) <= 63
    assert long == job_name("r" * 60, "prePromotion", "c" * 40, 3, at)
    assert long != job_name("r" * 60, "prePromotion", "c" * 40, 4, at)
    assert long != job_name("r" * 60, "prePromotion", "c" * 40, 3, at + timedelta(seconds=1))


def test_a_new_run_names_a_job_of_its_own() -> None:
    """Attempt 1 of a retried run must not find the finished Job of the last run."""
    world = retried_after_a_failed_backtest(
        "Job failed: BackoffLimitExceeded", wait=timedelta(seconds=30)
    )
    first, again = (r.run for r in starts(world))
    assert (first.attempt, again.attempt) == (1, 1)
    assert first.started_at != again.started_at
    names = {
        job_name("model", r.point, r.check.name, r.attempt, r.started_at) for r in (first, again)
    }
    assert len(names) == 2


def test_a_failed_check_stops_the_rest_of_its_gate() -> None:
    """Nothing of a decided gate keeps running: the others are stopped, not left Running
    (a Running entry would be read, and its webhook called, on every later pass)."""
    hook = {"name": "approve", "webhook": {"url": "http://approver.ml.svc/check"}}
    world = World(spec_with(preRollout=[job("backtest"), hook]))
    world.tick()
    world.checks = (
        CheckObservation("preRollout", "backtest", 1, "running"),
        CheckObservation("preRollout", "approve", 1, "failed", "HTTP 409: no"),
    )
    world.tick()
    assert world.status.phase == "Failed"
    phases = {c.name: (c.phase, c.message) for c in world.status.checks}
    assert phases["backtest"] == ("Failed", "stopped: another check of this gate failed")
    assert phases["approve"][0] == "Failed"
    stops = [a.run for d in world.decisions for a in d.actions if isinstance(a, StopCheck)]
    assert [(s.check.name, s.attempt) for s in stops] == [("backtest", 1)]
    assert "approve failed: HTTP 409: no" in world.status.message
    assert "backtest" not in world.status.message
    assert any(e.reason == "CheckStopped" for e in world.events)


def test_a_job_and_its_pods_read_as_kubernetes_writes_them() -> None:
    assert job_state({"status": {}})[0] == "running"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_state(done)[0] == "succeeded"
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}
    assert job_state({"status": {"conditions": [failed]}}) == (
        "failed",
        "BackoffLimitExceeded: x",
    )
    terminated = {"state": {"terminated": {"message": '{"auc": 0.9}'}}}
    pods = [
        {"status": {"phase": "Failed", "containerStatuses": [terminated]}},
        {"status": {"phase": "Succeeded", "containerStatuses": [terminated]}},
    ]
    assert kpis_of(pods) == {"auc": 0.9}
    assert kpis_of([{"status": {"phase": "Succeeded", "containerStatuses": []}}]) is None


def test_checks_refuse_a_job_without_its_pod_template_and_two_kinds_at_once() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"job\.template\.template\n  Field required"):
        Checks.model_validate({"preRollout": [{"name": "x", "job": {"template": {}}}]})
    both = {"name": "x", "job": JOB, "webhook": {"url": "http://a.svc/"}}
    with pytest.raises(ValidationError, match="exactly one of job or webhook"):
        Checks.model_validate({"preRollout": [both]})


def test_only_a_rollout_whose_gates_run_has_attempts_to_read() -> None:
    """A paused or finished rollout's attempt is not read: no webhook call, no Job made
    again after its TTL, for a gate nobody judges."""
    world = World(spec_with(preRollout=[job("backtest")]))
    world.tick()
    assert [c.name for c in running(world.status)] == ["backtest"]
    for phase in ("Paused", "RollingBack", "RolledBack", "Failed", "Succeeded"):
        assert running(world.status.model_copy(update={"phase": phase})) == []


def test_a_job_that_finished_during_a_pause_longer_than_its_timeout_passes() -> None:
    """Nothing is read while paused; the first pass after the resume has read nothing
    yet and must not call the attempt late: the next one reads the Job's success."""
    world = World(spec_with(preRollout=[job("backtest", timeout="1m")]))
    world.tick()
    seen(world, "running")
    world.tick()
    world.action = "pause"
    world.tick()
    assert world.status.phase == "Paused"
    world.checks = ()  # the adapters read no attempt of a paused rollout
    world.tick(seconds=600)
    world.action = "resume"
    world.tick()
    assert world.status.phase == "Pending"
    assert world.status.checks[0].phase == "Running"
    seen(world, "succeeded")
    world.tick()
    assert world.status.checks[0].phase == "Succeeded"
    assert world.status.stage == 1
