"""Gate checks end to end: the operator (under the chart's RBAC) creates evaluation Jobs,
kube-controller-manager runs them, kwok ends their pods as the pods' annotations say
(tests/testbed/kwok-pod-stages.yaml), and webhooks reach a real HTTP process on
loopback (tests/testbed/gatehook.py). Each gate point passes and fails; a gate that
cannot decide never passes.

Where cases need the same operator, their rollouts run side by side in one namespace,
each on targets of its own."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from testbed import free_port, procs

from . import objects
from .conftest import (
    PROMETHEUS_SECRETS,
    Api,
    Obj,
    Operator,
    OperatorFactory,
    RouteRecorder,
    phase,
    stage,
    story,
)
from .scenario import eventually, gateway_weights

ROLLOUT_LABEL = "rollouts.mlops.io/rollout"
STAGES = {"stages": [{"weight": 10, "duration": "2s"}, {"weight": 100, "duration": "2s"}]}
BEFORE = (100, 0, False)  # the route as the user wrote it: the stable serves everything
CANARY = (90, 10, False)
PROMOTED = (0, 100, False)
# The operator may read this Secret (besides the analysis' one), as the chart grants.
SECRET_VALUES = {"prometheusSecrets": [*PROMETHEUS_SECRETS, "gate-url"]}


def job_check(
    name: str,
    *,
    exit_code: int = 0,
    message: Obj | str | None = None,
    run_seconds: int | None = None,
    kpis: list[Obj] | None = None,
    restart_policy: str | None = "Never",
    **extra: Any,
) -> Obj:
    """A Job check whose pod kwok ends with `exit_code`, writing `message` to its
    termination message, `run_seconds` after it started."""
    annotations = {"kwok.mlops.io/exit-code": str(exit_code)}
    if message is not None:
        text = message if isinstance(message, str) else json.dumps(message)
        annotations["kwok.mlops.io/termination-message"] = text
    if run_seconds is not None:
        annotations["kwok.mlops.io/run-seconds"] = str(run_seconds)
    pod: Obj = {"containers": [{"name": "backtest", "image": "registry.example/backtest:1"}]}
    if restart_policy is not None:
        pod["restartPolicy"] = restart_policy
    template = {"metadata": {"annotations": annotations}, "spec": pod}
    job: Obj = {"template": {"backoffLimit": 0, "template": template}}
    if kpis is not None:
        job["kpis"] = kpis
    return {"name": name, "job": job, **extra}


def rollout(
    api: Api, name: str, checks: Obj, *, candidate_version: str | None = None
) -> Callable[[], tuple[Any, ...]]:
    """A Gateway API rollout `name` with `checks`, on Deployments, Services and an
    HTTPRoute of its own; returns a reader of its route: (stable, candidate, mirror)."""
    stable, candidate = f"{name}-v1", f"{name}-v2"
    manifest = objects.rollout(
        name, stable, candidate, {"gatewayAPI": {"httpRoute": name}}, strategy=STAGES,
        checks=checks,
    )  # fmt: skip
    manifest["spec"]["stable"]["service"] = stable
    manifest["spec"]["candidate"]["service"] = candidate
    if candidate_version is not None:
        manifest["spec"]["candidate"]["modelVersion"] = candidate_version
    api.apply(
        objects.deployment(stable, app=name),
        objects.deployment(candidate, version="v2", app=name),
        objects.service(stable, stable),
        objects.service(candidate, candidate),
        objects.http_route(name, stable, candidate),
        manifest,
    )
    return lambda: gateway_weights(api.get("httproute", name))


@dataclass
class GateHook:
    """The webhook receiver process, and what it recorded."""

    port: int
    record: Path

    def url(self, path: str = "/hook", **answer: Any) -> str:
        """Where to POST for `answer` (status, reason, delay: see testbed.gatehook)."""
        query = f"?{urlencode(answer)}" if answer else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"

    def calls(self, path: str = "/hook") -> list[Obj]:
        lines = self.record.read_text().splitlines()
        return [call for call in map(json.loads, lines) if call["path"] == path]


@pytest.fixture
def hook(spawn: Callable[..., procs.Proc], tmp_path: Path) -> GateHook:
    port, record = free_port(), tmp_path / "gatehook.jsonl"
    argv = [sys.executable, "-m", "testbed.gatehook", "--port", str(port), "--record", record]
    proc = spawn("gatehook", argv, env={"PYTHONPATH": "tests"})
    procs.wait_until(
        lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 10, "the gatehook to listen", proc
    )
    return GateHook(port, record)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def checks_of(obj: Obj) -> dict[str, Obj]:
    return {c["name"]: c for c in (obj.get("status") or {}).get("checks", [])}


def check_phase(name: str, wanted: str) -> Callable[[Obj], bool]:
    return lambda obj: checks_of(obj).get(name, {}).get("phase") == wanted


def jobs(api: Api, name: str) -> list[Obj]:
    """The Jobs of rollout `name`, oldest first."""
    out = api.control_plane.kubectl(
        "get", "jobs", "-n", api.namespace, "-l", f"{ROLLOUT_LABEL}={name}", "-o", "json"
    )
    items: list[Obj] = json.loads(out)["items"]
    return sorted(items, key=lambda j: str(j["metadata"]["creationTimestamp"]))


def job_condition(job: Obj) -> str | None:
    """Complete or Failed, once the Job has ended."""
    conditions = (job.get("status") or {}).get("conditions", [])
    ended = [c["type"] for c in conditions if c["type"] in ("Complete", "Failed")]
    return ended[0] if ended else None


def events(api: Api, name: str, reason: str, type: str = "Warning") -> list[str]:
    """Every event of `reason` about rollout `name`, once there is one."""
    found = api.wait_events(
        name, lambda e: (e["type"], e["reason"]) == (type, reason), f"{type} {reason}"
    )
    return [str(e["message"]) for e in found]


def record_route(api: Api, name: str) -> RouteRecorder:
    recorder = RouteRecorder(api, "httproute", name, gateway_weights)
    eventually(lambda: len(recorder.versions) > 0, True)
    return recorder


def logs_of(api: Api, job: Obj) -> str:
    return f"kubectl logs -n {api.namespace} job/{job['metadata']['name']}"


# -- before the first traffic ------------------------------------------------------------


def test_a_pre_rollout_job_with_kpis_in_bounds_lets_the_rollout_start(
    api: Api, operator: Operator
) -> None:
    kpis = [{"name": "auc", "min": 0.9}, {"name": "ks", "max": 0.3}]
    check = job_check("backtest", message={"auc": 0.93, "ks": 0.21}, run_seconds=4, kpis=kpis)
    read = rollout(api, "model", {"preRollout": [check]}, candidate_version="2.0")
    running = api.wait_rollout("model", check_phase("backtest", "Running"), "the check", 60)
    assert (phase(running), stage(running), read()) == ("Pending", 0, BEFORE)
    (job,) = jobs(api, "model")
    assert job["metadata"]["ownerReferences"][0]["uid"] == running["metadata"]["uid"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    assert env["MODELROLLOUT_CHECK_POINT"] == "preRollout"
    assert env["MODELROLLOUT_CANDIDATE_VERSION"] == "2.0"
    assert env["MODELROLLOUT_CANDIDATE_DEPLOYMENT"] == "model-v2"

    started = api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 30)
    entry = checks_of(started)["backtest"]
    assert (entry["phase"], entry["attempt"]) == ("Succeeded", 1)
    assert entry["job"] == job["metadata"]["name"]
    assert {k["name"]: (k["value"], k["verdict"]) for k in entry["kpis"]} == {
        "auc": (0.93, "pass"),
        "ks": (0.21, "pass"),
    }
    assert "auc 0.93" in entry["message"]
    done = api.wait_phase("model", "Succeeded", timeout=30)
    assert read() == PROMOTED, story(done)
    assert [j["metadata"]["uid"] for j in jobs(api, "model")] == [job["metadata"]["uid"]]


def test_a_kpi_out_of_bounds_fails_the_rollout_before_any_traffic(
    api: Api, operator: Operator
) -> None:
    check = job_check("backtest", message={"auc": 0.71}, kpis=[{"name": "auc", "min": 0.9}])
    rollout(api, "model", {"preRollout": [check]})
    recorder = record_route(api, "model")
    failed = api.wait_phase("model", "Failed", timeout=60)
    recorder.stop()
    (job,) = jobs(api, "model")
    logs = logs_of(api, job)
    status = failed["status"]
    assert (stage(failed), status["weight"]) == (0, 0)
    assert "auc 0.71 < min 0.9" in status["message"]
    assert logs in status["message"]
    assert "no traffic was moved" in status["message"]
    entry = checks_of(failed)["backtest"]
    assert entry["phase"] == "Failed"
    assert entry["kpis"] == [{"name": "auc", "value": 0.71, "verdict": "fail"}]
    failures = events(api, "model", "CheckFailed")  # the check's, and the rollout's Failed
    assert all("auc 0.71 < min 0.9" in e and logs in e for e in failures), failures
    assert any("no traffic was moved" in e for e in failures), failures
    assert recorder.distinct() == [BEFORE], "traffic moved before the check passed"


def test_a_webhook_that_times_out_is_retried_then_fails_the_rollout(
    api: Api, operator: Operator, hook: GateHook
) -> None:
    slow = {"url": hook.url(delay=3), "timeout": "1s"}
    rollout(api, "model", {"preRollout": [{"name": "approver", "webhook": slow, "retries": 2}]})
    failed = api.wait_phase("model", "Failed", timeout=60)
    assert [c["body"]["check"]["attempt"] for c in hook.calls()] == [1, 2, 3]
    entry = checks_of(failed)["approver"]
    assert (entry["phase"], entry["attempt"]) == ("Failed", 3)
    assert entry["message"] == "webhook did not answer within 1s"
    assert "approver failed: webhook did not answer within 1s" in failed["status"]["message"]
    assert stage(failed) == 0
    assert len(events(api, "model", "CheckRetried")) == 2


def test_an_operator_killed_while_a_job_runs_resumes_with_the_same_job(
    api: Api, operator: Operator
) -> None:
    check = job_check("backtest", message={"auc": 0.95}, run_seconds=12)
    check["job"]["kpis"] = [{"name": "auc", "min": 0.9}]
    rollout(api, "model", {"preRollout": [check]})
    api.wait_rollout("model", check_phase("backtest", "Running"), "the check", 60)
    eventually(lambda: len(jobs(api, "model")), 1)
    (job,) = jobs(api, "model")
    assert job_condition(job) is None, "the Job ended before the operator was killed"
    operator.restart_after_kill()

    started = api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1 after the restart", 60)
    entry = checks_of(started)["backtest"]
    assert (entry["phase"], entry["attempt"]) == ("Succeeded", 1)
    (again,) = jobs(api, "model")  # no second Job
    assert again["metadata"]["uid"] == job["metadata"]["uid"]
    assert entry["job"] == job["metadata"]["name"]
    assert len(events(api, "model", "CheckStarted", "Normal")) == 1


def test_a_new_run_after_a_failed_check_runs_a_job_of_its_own(api: Api, operator: Operator) -> None:
    """The fix after a failed backtest is a new candidate or template, which starts a
    new run: its attempt 1 must not meet the last run's finished (and immutable) Job."""
    rollout(api, "model", {"preRollout": [job_check("backtest", exit_code=1)]})
    api.wait_phase("model", "Failed", timeout=60)
    api.patch_spec("model", {"checks": {"preRollout": [job_check("backtest")]}})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1 of the new run", 60)
    first, second = jobs(api, "model")
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert (job_condition(first), job_condition(second)) == ("Failed", "Complete")
    assert checks_of(api.rollout("model"))["backtest"]["job"] == second["metadata"]["name"]


# -- a gate that cannot decide never passes -------------------------------------------------

UNDECIDED: dict[str, tuple[Obj, str]] = {
    # the Job succeeded but reported no KPI to judge
    "no-kpis": (job_check("c", kpis=[{"name": "auc", "min": 0.9}]), "wrote no KPIs"),
    # a Job's pods may not restart Always: the API server refuses it
    "refused-job": (job_check("c", restart_policy=None), "spec.template.spec.restartPolicy"),
    "late-job": (job_check("c", run_seconds=3600, timeout="4s"), "timed out after 4s"),
    "missing-secret": (
        {"name": "c", "webhook": {"urlSecretRef": {"name": "gate-url", "key": "url"}}},
        "Secret gate-url not found",
    ),
    "unreadable-secret": (
        {"name": "c", "webhook": {"urlSecretRef": {"name": "other-secret", "key": "url"}}},
        'Secret other-secret not readable: secrets "other-secret" is forbidden',
    ),
    "refused-url": (  # the cloud metadata address, refused by the operator's allowlist
        {"name": "c", "webhook": {"url": "http://169.254.169.254/latest/meta-data/"}},
        "webhook URL not allowed: 169.254.169.254, which the operator's allowed addresses",
    ),
}


def test_a_gate_that_cannot_decide_fails_with_a_clear_message(
    api: Api, operator_factory: OperatorFactory
) -> None:
    """A Job that reports no KPI, a Job the API server refuses, a Job past its timeout,
    a Secret that is missing or that the operator may not read, a URL its allowlist
    refuses: each fails the check, with the reason in status and the Event. Never a
    pass, never a silent wait."""
    operator_factory([api.namespace], values=SECRET_VALUES)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other-secret"}}
    api.apply(secret | {"stringData": {"url": "http://127.0.0.1:1/"}})
    for name, (check, _) in UNDECIDED.items():
        rollout(api, name, {"preRollout": [check]})
    problems = {}
    for name, (_, expected) in UNDECIDED.items():
        failed = api.wait_phase(name, "Failed", timeout=60)
        said = [checks_of(failed)["c"]["message"], failed["status"]["message"]]
        said += events(api, name, "CheckFailed")
        if not all(expected in text for text in said) or stage(failed) != 0:
            problems[name] = said
    assert problems == {}
    assert jobs(api, "refused-job") == []
    # the late Job is deleted with its pods (never orphaned)
    eventually(lambda: jobs(api, "late-job"), [], timeout=30)
    pods = lambda: api.control_plane.kubectl(  # noqa: E731
        "get", "pods", "-n", api.namespace, "-l", "batch.kubernetes.io/job-name", "-o", "name"
    ).split()
    eventually(lambda: [p for p in pods() if "late-job" in p], [], timeout=30)


# -- before the last stage, and after it -------------------------------------------------


def test_a_pre_promotion_webhook_answering_409_rolls_back_before_the_last_stage(
    api: Api, operator: Operator, hook: GateHook
) -> None:
    url = hook.url(status=409, reason="model card missing")
    check = {"name": "model-card", "webhook": {"url": url}}
    rollout(api, "model", {"prePromotion": [check]}, candidate_version="2.0")
    recorder = record_route(api, "model")
    rolled_back = api.wait_phase("model", "RolledBack", timeout=60)
    recorder.stop()
    assert recorder.distinct() == [BEFORE, CANARY, BEFORE], "promoted despite the check"
    entry = checks_of(rolled_back)["model-card"]
    assert (entry["phase"], entry["message"]) == ("Failed", "HTTP 409: model card missing")
    rollback = next(h for h in rolled_back["status"]["history"] if h["to"] == "RollingBack")
    assert rollback["reason"] == "CheckFailed"
    assert "model-card failed: HTTP 409: model card missing" in rollback["message"]
    assert any("model card missing" in e for e in events(api, "model", "CheckFailed"))
    (call,) = hook.calls()
    body = call["body"]
    assert body["check"] == {"point": "prePromotion", "name": "model-card", "attempt": 1}
    assert body["rollout"]["name"] == "model"
    assert body["rollout"]["uid"] == rolled_back["metadata"]["uid"]
    assert (body["stage"], body["stageCount"], body["weight"]) == (1, 2, 10)
    assert body["candidate"]["deployment"] == "model-v2"
    assert body["candidate"]["modelVersion"] == "2.0"
    assert body["stable"]["deployment"] == "model-v1"


def test_passing_pre_and_post_promotion_checks_let_the_rollout_succeed(
    api: Api, operator_factory: OperatorFactory, hook: GateHook
) -> None:
    """A backtest Job before the last stage and a smoke webhook (its URL in a Secret)
    after it: the last stage waits for the first, Succeeded for the second."""
    operator_factory([api.namespace], values=SECRET_VALUES)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gate-url"}}
    api.apply(secret | {"stringData": {"url": hook.url("/smoke")}})
    kpis = [{"name": "auc", "min": 0.9}]
    backtest = job_check("backtest", message={"auc": 0.95}, run_seconds=3, kpis=kpis)
    smoke = {"name": "smoke", "webhook": {"urlSecretRef": {"name": "gate-url", "key": "url"}}}
    read = rollout(api, "model", {"prePromotion": [backtest], "postPromotion": [smoke]})
    waiting = api.wait_rollout("model", check_phase("backtest", "Running"), "the backtest", 60)
    assert (stage(waiting), read()) == (1, CANARY)
    done = api.wait_phase("model", "Succeeded", timeout=60)
    assert read() == PROMOTED
    found = checks_of(done)
    assert (found["backtest"]["phase"], found["smoke"]["phase"]) == ("Succeeded", "Succeeded")
    last = next(h for h in done["status"]["history"] if h["stage"] == 2)
    assert found["backtest"]["finishedAt"] <= last["time"], "promoted before the backtest passed"
    (call,) = hook.calls("/smoke")
    assert (call["body"]["check"]["point"], call["body"]["weight"]) == ("postPromotion", 100)


def test_a_post_promotion_failure_is_reported_or_rolls_back_as_asked(
    api: Api, operator: Operator
) -> None:
    smoke = job_check("smoke", exit_code=1, message="3 of 20 smoke requests failed")
    read = {
        failure: rollout(
            api, failure.lower(), {"postPromotion": [smoke], "postPromotionFailure": failure}
        )
        for failure in ("Report", "Rollback")
    }
    for failure, expected_phase, route in (
        ("Report", "Succeeded", PROMOTED),
        ("Rollback", "RolledBack", BEFORE),
    ):
        name = failure.lower()
        ended = api.wait_phase(name, "Succeeded", "RolledBack", timeout=60)
        assert phase(ended) == expected_phase, story(ended)
        assert read[failure]() == route
        (job,) = jobs(api, name)
        entry = checks_of(ended)["smoke"]
        assert entry["phase"] == "Failed"
        assert "BackoffLimitExceeded" in entry["message"]
        assert logs_of(api, job) in entry["message"]
        if failure == "Report":
            (reported,) = events(api, name, "PostPromotionCheckFailed")
            assert "smoke failed" in reported
            assert logs_of(api, job) in reported
        else:
            rollback = next(h for h in ended["status"]["history"] if h["to"] == "RollingBack")
            assert (rollback["reason"], rollback["stage"]) == ("CheckFailed", 2)
