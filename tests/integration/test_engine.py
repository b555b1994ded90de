"""The rollout engine, end to end on the real control plane: the operator runs as a
process, kube-controller-manager and kwok make the Deployments' pods ready, and the
tests read the routing objects the operator writes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import kubernetes
import pytest
from kopf._core.engines import posting

from modelrollout.controller.adapters import Adapters
from modelrollout.controller.reconcile import reconcile
from modelrollout.egress import AddressPolicy
from modelrollout.kube.client import Kube

from . import objects
from .conftest import (
    Api,
    Obj,
    Operator,
    OperatorFactory,
    RouteRecorder,
    condition,
    phase,
    stage,
    story,
)
from .scenario import eventually, gateway_weights, setup

LOOPBACK = AddressPolicy.parse("127.0.0.0/8")  # the test servers

FINALIZER = "rollouts.mlops.io/finalizer"


PRESETS = {"1-5-25-100": [1, 5, 25, 100], "5-10-25-50-100": [5, 10, 25, 50, 100]}


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("router", ["replicas", "gatewayAPI", "istio"])
def test_a_preset_walks_every_stage_with_each_router(
    api: Api, operator: Operator, router: str, preset: str
) -> None:
    read = setup(api, router, {"preset": preset, "stageDuration": "3s"})
    for number, weight in enumerate(PRESETS[preset], start=1):
        obj = api.wait_rollout("model", lambda o, n=number: stage(o) >= n, f"stage {number}", 60)
        assert stage(obj) == number, "a stage was skipped"
        assert obj["status"]["weight"] == weight
        if router == "replicas":
            candidate = min(10, max(1, -(-10 * weight // 100)))
            eventually(read, (10 - candidate, candidate))
            assert obj["status"]["effectiveWeight"] == candidate * 10
        else:
            eventually(read, (100 - weight, weight, False))
    done = api.wait_phase("model", "Succeeded", timeout=30)
    ready = condition(done, "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert done["status"]["observedGeneration"] == done["metadata"]["generation"]
    assert read() == ((0, 10) if router == "replicas" else (0, 100, False))
    api.control_plane.kubectl(
        "wait", "--for=condition=Ready", "mro/model", "-n", api.namespace, "--timeout=5s"
    )
    assert FINALIZER not in api.rollout("model")["metadata"].get("finalizers", [])


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_a_mirror_stage_mirrors_at_zero_and_stops_after(
    api: Api, operator: Operator, router: str
) -> None:
    stages = [
        {"weight": 0, "mirror": True, "duration": "4s"},
        {"weight": 50, "duration": "4s"},
        {"weight": 100, "duration": "2s"},
    ]
    read = setup(api, router, {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "the mirror stage", 60)
    eventually(read, (100, 0, True))
    assert api.rollout("model")["status"]["mirroring"] is True
    api.wait_rollout("model", lambda o: stage(o) == 2, "stage 2", 30)
    eventually(read, (50, 50, False))
    api.wait_phase("model", "Succeeded", timeout=30)


def test_abort_is_one_write_and_retry_starts_over(api: Api, operator: Operator) -> None:
    stages = [{"weight": 10, "duration": "2s"}, {"weight": 50, "duration": "10m"}]
    stages.append({"weight": 100, "duration": "2s"})
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 2, "stage 2", 60)
    eventually(read, (50, 50, False))
    recorder = RouteRecorder(api, "httproute", "model", gateway_weights)
    time.sleep(1)
    api.annotate("model", "abort")
    rolled_back = api.wait_phase("model", "RolledBack", timeout=30)
    time.sleep(1)
    recorder.stop()
    assert recorder.versions == [(50, 50, False), (100, 0, False)]  # the initial state, one write
    assert rolled_back["status"]["weight"] == 0
    assert "rollouts.mlops.io/action" not in rolled_back["metadata"].get("annotations", {})
    stalled = condition(rolled_back, "Stalled")
    assert stalled is not None
    assert stalled["status"] == "True"
    api.wait_events(
        "model", lambda e: (e["type"], e["reason"]) == ("Warning", "Aborted"), "Warning Aborted"
    )

    api.annotate("model", "retry")
    api.wait_rollout("model", lambda o: stage(o) == 1 and phase(o) == "Progressing", "retry", 30)
    eventually(read, (90, 10, False))


def test_a_pass_on_a_stale_copy_does_not_undo_the_last_write(api: Api, operator: Operator) -> None:
    """kopf hands the daemon a body that lags our own writes until their watch events
    arrive. A pass on the copy from before a rollback once saw the route at 0%,
    took it for a change by someone else and restored 50% (CI, 2026-11-23)."""
    stages = [{"weight": 50, "duration": "10m"}, {"weight": 100, "duration": "2s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    eventually(read, (50, 50, False))
    stale = api.rollout("model")
    api.annotate("model", "abort")
    api.wait_phase("model", "RolledBack", timeout=30)
    operator.kill()
    stored = api.rollout("model")

    events = asyncio.run(_one_pass(api, stale))

    assert read() == (100, 0, False)
    after = api.rollout("model")
    assert after["status"] == stored["status"], story(after)
    assert not [e for e in events if e["reason"] == "WeightOverridden"], events


async def _one_pass(api: Api, body: Obj) -> list[Obj]:
    """One in-process `reconcile` on `body`, against the real API server; the Events
    it would post are returned instead (kopf posts them only inside its operator)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    adapters = Adapters.for_kube(
        Kube(kubernetes.client.ApiClient(api.client.configuration)), LOOPBACK, 1
    )
    try:
        logger = logging.getLogger("test-reconcile")
        await reconcile(adapters, kopf.Body(body), {}, logger)
    finally:
        await adapters.close()
    events = []
    while not queue.empty():
        event = queue.get_nowait()
        events.append({"type": event.type, "reason": event.reason, "message": event.message})
    return events


def test_a_manual_stage_waits_for_promote(api: Api, operator: Operator) -> None:
    stages = [{"weight": 10, "duration": "1s", "approval": "Manual"}]
    stages.append({"weight": 100, "duration": "1s"})
    analysis = {"interval": "5s", "prometheus": {"address": "http://127.0.0.1:9"}}
    read = setup(api, "gatewayAPI", {"stages": stages}, analysis=analysis)
    paused = api.wait_phase("model", "Paused", timeout=60)
    assert paused["status"]["history"][-1]["reason"] == "AwaitingApproval"
    time.sleep(16)  # more than three analysis intervals
    still = api.rollout("model")
    assert (phase(still), stage(still)) == ("Paused", 1)
    assert read() == (90, 10, False)
    api.annotate("model", "promote")
    api.wait_phase("model", "Succeeded", timeout=30)
    assert read() == (0, 100, False)


def test_pause_and_resume_hold_the_weight(api: Api, operator: Operator) -> None:
    # long enough for the pause to land within stage 1 on a loaded machine
    stages = [{"weight": 20, "duration": "10s"}, {"weight": 100, "duration": "2s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    api.patch_spec("model", {"paused": True})
    paused = api.wait_phase("model", "Paused")
    began = datetime.fromisoformat(paused["status"]["stageStartedAt"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (began + timedelta(seconds=13) - datetime.now(UTC)).total_seconds()))
    # held past the stage's 10 s
    assert (stage(api.rollout("model")), read()) == (1, (80, 20, False))
    api.patch_spec("model", {"paused": False})
    api.wait_phase("model", "Succeeded")


KILL_STAGES = [
    {"weight": 10, "duration": "3s"},
    {"weight": 30, "duration": "2s", "approval": "Manual"},
    {"weight": 60, "duration": "3s"},
    {"weight": 100, "duration": "3s"},
]


def _no_repeated_events(api: Api) -> None:
    events = api.events("model")
    keys = [(e["reason"], e["message"]) for e in events]
    assert len(keys) == len(set(keys)), keys
    assert all((e["count"] or 1) == 1 for e in events)


def test_killed_in_every_phase_it_writes_what_a_clean_run_writes(
    api: Api, operator: Operator
) -> None:
    recorder = RouteRecorder(api, "httproute", "model", gateway_weights)
    read = setup(api, "gatewayAPI", {"stages": KILL_STAGES})
    operator.restart_after_kill()  # Pending, or the first pass
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    operator.restart_after_kill()  # Progressing
    api.wait_phase("model", "Paused", timeout=60)
    operator.restart_after_kill()  # Paused, awaiting approval
    time.sleep(2)
    api.annotate("model", "promote")
    api.wait_rollout("model", lambda o: stage(o) == 3, "stage 3", 60)
    operator.restart_after_kill()  # Progressing again
    api.wait_phase("model", "Succeeded", timeout=60)
    operator.restart_after_kill()  # Succeeded
    time.sleep(3)
    recorder.stop()
    assert phase(api.rollout("model")) == "Succeeded"
    assert read() == (0, 100, False)
    weights = [(stable, candidate) for stable, candidate, _ in recorder.distinct()]
    assert weights == [(100, 0), (90, 10), (70, 30), (40, 60), (0, 100)]
    _no_repeated_events(api)


def test_killed_while_rolling_back_it_still_rolls_back(api: Api, operator: Operator) -> None:
    recorder = RouteRecorder(api, "httproute", "model", gateway_weights)
    stages = [{"weight": 10, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})  # stage 1 lasts past the abort
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    eventually(read, (90, 10, False))  # the status is written first, the route next
    operator.kill()
    api.annotate("model", "abort")
    operator.start()
    api.wait_phase("model", "RollingBack", "RolledBack", timeout=30)
    operator.restart_after_kill()  # RollingBack or RolledBack
    api.wait_phase("model", "RolledBack", timeout=30)
    time.sleep(2)
    recorder.stop()
    weights = [(stable, candidate) for stable, candidate, _ in recorder.distinct()]
    assert weights == [(100, 0), (90, 10), (100, 0)]
    _no_repeated_events(api)


def test_someone_elses_weights_are_reported_and_reasserted(api: Api, operator: Operator) -> None:
    stages = [{"weight": 20, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    eventually(read, (80, 20, False))
    api.wait_rollout(
        "model", lambda o: o.get("status", {}).get("weightConfirmed"), "the weight confirmed"
    )
    rules = objects.http_route("model", "model-v1", "model-v2")["spec"]["rules"]
    api.control_plane.kubectl(  # a person puts it back to 100/0 by hand
        "patch", "httproute", "model", "-n", api.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"rules": rules}}),
    )  # fmt: skip
    eventually(read, (80, 20, False), timeout=20)
    warnings = api.wait_events(
        "model", lambda e: e["reason"] == "WeightOverridden", "WeightOverridden"
    )
    assert "restoring 20%" in warnings[0]["message"]


def test_a_route_without_the_backends_fails_without_a_write(api: Api, operator: Operator) -> None:
    route = objects.http_route("model", "model-v1", "someone-else")
    rollout = objects.rollout(
        "model", "model-v1", "model-v2", {"gatewayAPI": {"httpRoute": "model"}}
    )
    rollout["spec"]["stable"]["service"] = "model-v1"
    rollout["spec"]["candidate"]["service"] = "model-v2"
    api.apply(
        objects.deployment("model-v1"),
        objects.deployment("model-v2"),
        objects.service("model-v1"),
        objects.service("model-v2"),
        route,
    )
    before = api.get("httproute", "model")["metadata"]["resourceVersion"]
    api.apply(rollout)
    failed = api.wait_phase("model", "Failed")
    stalled = condition(failed, "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "RoutingInvalid"
    assert "HTTPRoute model rule 0 has no backendRef for Service model-v2" in stalled["message"]
    time.sleep(2)
    assert api.get("httproute", "model")["metadata"]["resourceVersion"] == before


def delete_at_stage_one(api: Api, deployment: str) -> Callable[[], tuple[Any, ...]]:
    """A rollout at 20% in stage 1 (of ten minutes) with `deployment` deleted under it;
    returns the reader of its routing state."""
    stages = [{"weight": 20, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    api.control_plane.kubectl("delete", "deployment", deployment, "-n", api.namespace)
    return read


def test_a_deleted_candidate_rolls_back(api: Api, operator: Operator) -> None:
    read = delete_at_stage_one(api, "model-v2")
    rolled_back = api.wait_phase("model", "RolledBack")
    assert [h["reason"] for h in rolled_back["status"]["history"]][-2:] == [
        "CandidateMissing",
        "RolledBack",
    ]
    assert read() == (100, 0, False)


def test_a_deleted_stable_pauses_with_a_condition(api: Api, operator: Operator) -> None:
    read = delete_at_stage_one(api, "model-v1")
    paused = api.wait_phase("model", "Paused")
    reconciling = condition(paused, "Reconciling")
    assert reconciling is not None
    assert reconciling["reason"] == "StableMissing"
    assert "stable Deployment model-v1 is gone" in reconciling["message"]
    assert read() == (80, 20, False)


def holding_twenty_percent(api: Api) -> Callable[[], tuple[Any, ...]]:
    """A gatewayAPI rollout at stage 1 (20%) for ten minutes; the route's reader."""
    stages = [{"weight": 20, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    eventually(read, (80, 20, False))
    return read


def test_deleting_mid_rollout_gives_traffic_back_to_the_stable(
    api: Api, operator: Operator
) -> None:
    read = holding_twenty_percent(api)
    assert FINALIZER in api.rollout("model")["metadata"]["finalizers"]
    api.control_plane.kubectl("delete", "mro", "model", "-n", api.namespace, "--timeout=30s")
    assert read() == (100, 0, False)
    api.wait_events("model", lambda e: e["reason"] == "Released", "Released")
    time.sleep(1)  # room for a second one, which must not come
    released = [e for e in api.events("model") if e["reason"] == "Released"]
    assert [e["count"] or 1 for e in released] == [1]  # by the daemon alone


def test_a_deletion_while_the_operator_is_down_gives_traffic_back_once_it_returns(
    api: Api, operator: Operator
) -> None:
    read = holding_twenty_percent(api)
    operator.kill()
    api.control_plane.kubectl("delete", "mro", "model", "-n", api.namespace, "--wait=false")
    held = api.rollout("model")
    assert held["metadata"].get("deletionTimestamp")  # the finalizer holds it
    assert read() == (80, 20, False)
    operator.start()
    api.control_plane.kubectl(
        "wait", "--for=delete", "mro/model", "-n", api.namespace, "--timeout=60s"
    )
    assert read() == (100, 0, False)
    [released] = api.wait_events("model", lambda e: e["reason"] == "Released", "Released")
    assert "deleted at stage 1 (20%)" in released["message"]


def test_deletion_is_not_blocked_when_the_targets_are_gone(api: Api, operator: Operator) -> None:
    holding_twenty_percent(api)
    api.control_plane.kubectl("delete", "httproute", "model", "-n", api.namespace)
    api.control_plane.kubectl("delete", "deployment", "--all", "-n", api.namespace)
    api.control_plane.kubectl("delete", "mro", "model", "-n", api.namespace, "--timeout=30s")


def test_fifty_rollouts_in_ten_namespaces(
    api: Api,
    k8s: kubernetes.client.ApiClient,
    operator_factory: OperatorFactory,
) -> None:
    core = kubernetes.client.CoreV1Api(k8s)
    namespaces = [f"{api.namespace}-{i}" for i in range(10)]
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns}})
    try:
        apis = [Api(api.control_plane, k8s, ns) for ns in namespaces]
        for ns_api in apis:
            manifests: list[Obj] = []
            for i in range(5):
                manifests += [
                    objects.deployment(f"m{i}-v1", replicas=2),
                    objects.deployment(f"m{i}-v2", replicas=0, version="v2"),
                    objects.rollout(
                        f"m{i}", f"m{i}-v1", f"m{i}-v2", {"replicas": {"totalReplicas": 2}},
                        strategy={"preset": "1-5-25-100", "stageDuration": "2s"},
                    ),
                ]  # fmt: skip
            ns_api.apply(*manifests)
        operator_factory(namespaces)
        deadline = time.monotonic() + 240
        for ns_api in apis:
            for i in range(5):
                left = max(1.0, deadline - time.monotonic())
                done = ns_api.wait_phase(f"m{i}", "Succeeded", timeout=left)
                assert done["status"]["stage"] == 4
                assert ns_api.get("deployment", f"m{i}-v2")["spec"]["replicas"] == 2
                assert ns_api.get("deployment", f"m{i}-v1")["spec"]["replicas"] == 0
    finally:
        for ns in namespaces:
            core.delete_namespace(ns)


def test_pause_and_resume_actions_hold_the_weight_past_the_stage(
    api: Api, operator: Operator
) -> None:
    stages = [{"weight": 20, "duration": "10s"}, {"weight": 100, "duration": "1s"}]
    read = setup(api, "gatewayAPI", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    api.annotate("model", "pause")  # within the stage's 10s
    paused = api.wait_phase("model", "Paused", timeout=30)
    assert (stage(paused), paused["status"]["manualPause"]) == (1, True), story(paused)
    assert paused["status"]["history"][-1]["reason"] == "PausedByAction"
    time.sleep(12)  # past the stage's 10s: a paused stage does not complete
    held = api.rollout("model")
    assert (phase(held), stage(held)) == ("Paused", 1), story(held)
    assert read() == (80, 20, False)
    api.annotate("model", "resume")
    done = api.wait_phase("model", "Succeeded", timeout=30)
    assert done["status"]["manualPause"] is False
    assert read() == (0, 100, False)
    api.wait_events("model", lambda e: e["reason"] == "PausedByAction", "PausedByAction")


class DeploymentRecorder:
    """Every stored version of the namespace's Deployments, in the API server's
    order: (name, spec.replicas, status.readyReplicas)."""

    def __init__(self, api: Api) -> None:
        self.versions: list[tuple[str, int, int]] = []
        self._watch = kubernetes.watch.Watch()
        apps = kubernetes.client.AppsV1Api(api.client)
        stream = self._watch.stream(apps.list_namespaced_deployment, api.namespace)

        def run() -> None:
            for event in stream:
                obj = event["object"]
                ready = obj.status.ready_replicas or 0
                self.versions.append((obj.metadata.name, obj.spec.replicas, ready))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._watch.stop()


def test_a_replicas_rollback_grows_the_stable_back_before_the_candidate_shrinks(
    api: Api, operator: Operator
) -> None:
    """At every write that shrinks a side, the other side's ready replicas already
    cover the fleet of 10 with it: capacity never dips, on the way up or back."""
    stages = [{"weight": 50, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    recorder = DeploymentRecorder(api)
    read = setup(api, "replicas", {"stages": stages})
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 90)
    eventually(read, (5, 5), timeout=30)
    api.annotate("model", "abort")
    api.wait_phase("model", "RolledBack", timeout=90)
    eventually(read, (10, 0), timeout=30)
    time.sleep(1)
    recorder.stop()
    specs: dict[str, int] = {}
    ready: dict[str, int] = {"model-v1": 0, "model-v2": 0}
    shrinks = []
    for name, replicas, now_ready in recorder.versions:
        other = "model-v2" if name == "model-v1" else "model-v1"
        if name in specs and replicas < specs[name]:
            shrinks.append((name, replicas, ready[other]))
            assert ready[other] + replicas >= 10, f"{name} to {replicas} with {other} at {ready}"
        specs[name], ready[name] = replicas, now_ready
    assert ("model-v1", 5, 5) in shrinks  # the stable shrank once the candidate was ready
    assert ("model-v2", 0, 10) in shrinks  # and the candidate only once the stable was back
