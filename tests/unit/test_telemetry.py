"""The operator's gauges follow each rollout's stored status, and only its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelrollout import telemetry


def psi_series() -> dict[tuple[str, ...], float]:
    return {
        tuple(sample.labels[k] for k in ("namespace", "name", "feature")): sample.value
        for metric in telemetry.DRIFT_PSI.collect()
        for sample in metric.samples
    }


def drift(**psi: float | None) -> dict[str, object]:
    return {"drift": {"features": [{"feature": f, "psi": v} for f, v in psi.items()]}}


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    telemetry.forget_states()
    yield
    telemetry.forget_states()


def test_a_feature_gone_from_status_loses_its_series_and_other_rollouts_keep_theirs() -> None:
    telemetry.record_state("ns", "a", drift(age=0.1, amount=0.2))
    telemetry.record_state("ns", "b", drift(age=0.3))
    telemetry.record_state("ns", "a", drift(amount=0.25, score=None))
    assert psi_series() == {("ns", "a", "amount"): 0.25, ("ns", "b", "age"): 0.3}


def test_a_deleted_rollout_takes_its_series_and_a_recreated_one_starts_clean() -> None:
    telemetry.record_state("ns", "a", drift(age=0.1))
    telemetry.record_state("ns", "b", drift(age=0.3))
    telemetry.forget("ns", "a")
    assert psi_series() == {("ns", "b", "age"): 0.3}
    telemetry.record_state("ns", "a", drift(score=0.5))
    telemetry.record_state("ns", "a", drift())
    assert psi_series() == {("ns", "b", "age"): 0.3}
