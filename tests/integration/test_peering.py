"""Two operator replicas in kopf peering mode, as the chart runs them for high
availability, under the chart's peering RBAC: only the replica of highest priority
drives rollouts, and a replica that pauses stops reporting rollouts it no longer sees."""

from __future__ import annotations

import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed import procs

from .conftest import Api, Operator, OperatorFactory, phase, stage
from .scenario import eventually, setup

PEERING = "mro-peers"
VALUES = {"highAvailability": {"mode": "peering", "peeringName": PEERING}}
STAGES = [
    {"weight": 20, "duration": "1s", "approval": "Manual"},
    {"weight": 50, "duration": "1s", "approval": "Manual"},
    {"weight": 100, "duration": "1s"},
]


@pytest.mark.usefixtures("peering_crds")
def test_the_highest_priority_replica_drives_and_a_paused_one_reports_nothing(
    api: Api, operator_factory: OperatorFactory
) -> None:
    ns = api.namespace
    low = operator_factory([ns], values=VALUES, args=["--peering", PEERING, "--priority", "1"])
    read = setup(api, "gatewayAPI", {"stages": STAGES})
    api.wait_rollout("model", lambda o: phase(o) == "Paused" and stage(o) == 1, "stage 1", 60)
    _wait_for_phase_gauge(low, ns, "Paused")

    high = operator_factory([ns], args=["--peering", PEERING, "--priority", "2"], like=low)
    _wait_for_phase_gauge(high, ns, "Paused")
    procs.wait_until(
        lambda: _phase_gauges(low, ns) == {},
        60,
        "the replica that paused to drop its rollout gauges",
        low.proc,
    )
    assert "Pausing operations in favour of" in low.proc.log.read_text()

    api.annotate("model", "promote")
    api.wait_rollout("model", lambda o: phase(o) == "Paused" and stage(o) == 2, "stage 2", 30)
    eventually(read, (50, 50, False))
    assert _promotions(high) == 1
    assert _promotions(low) == 0

    assert high.proc.popen is not None
    high.proc.popen.send_signal(signal.SIGTERM)  # a rolling update replaces the leader
    assert high.proc.popen.wait(timeout=60) == 0
    _wait_for_phase_gauge(low, ns, "Paused")
    api.annotate("model", "promote")
    api.wait_phase("model", "Succeeded", timeout=30)
    assert read() == (0, 100, False)
    assert _promotions(low) == 1


def _phase_gauges(operator: Operator, namespace: str) -> dict[str, float]:
    """The replica's modelrollout_phase samples for the rollout `model`."""
    try:
        text = operator.metrics()
    except OSError:  # not serving yet
        return {"unreachable": 1}
    return {
        sample.labels["phase"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelrollout_phase"
        and (sample.labels.get("namespace"), sample.labels.get("name")) == (namespace, "model")
    }


def _wait_for_phase_gauge(operator: Operator, namespace: str, phase: str) -> None:
    procs.wait_until(
        lambda: _phase_gauges(operator, namespace).get(phase) == 1,
        60,
        f"the replica to report the rollout {phase}",
        operator.proc,
    )


def _promotions(operator: Operator) -> int:
    """How many stage promotions this replica made, from its own log."""
    return operator.proc.log.read_text().count('"message": "Promoted:')
