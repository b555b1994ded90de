"""The pydantic models accept what the CRD accepts and refuse the same cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from invalid_rollouts import CASES, InvalidCase, valid_rollout
from modelrollout.api import ModelRollout
from modelrollout.api.durations import format_promql_duration, parse_duration
from modelrollout.api.spec import PRESETS, Strategy

SAMPLES = sorted((Path(__file__).parents[2] / "manifests" / "samples").glob("*.yaml"))


def test_the_valid_rollout_parses() -> None:
    rollout = ModelRollout.model_validate(valid_rollout())
    assert rollout.spec.traffic_routing.gateway_api is not None
    assert rollout.spec.traffic_routing.gateway_api.rule_index == 0
    assert [s.weight for s in rollout.spec.strategy.resolved_stages()] == [0, 10, 50, 100]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_samples_parse(path: Path) -> None:
    rollout = ModelRollout.model_validate(yaml.safe_load(path.read_text()))
    assert rollout.spec.strategy.resolved_stages()[-1].weight == 100


def test_there_is_a_sample_per_router_and_preset() -> None:
    specs = [ModelRollout.model_validate(yaml.safe_load(p.read_text())).spec for p in SAMPLES]
    routers = {
        name
        for s in specs
        for name in ("replicas", "gateway_api", "istio")
        if getattr(s.traffic_routing, name) is not None
    }
    assert routers == {"replicas", "gateway_api", "istio"}
    assert {s.strategy.preset for s in specs} >= set(PRESETS)
    custom = [s for s in specs if s.strategy.stages and s.drift_gate]
    assert any(x.approval == "Manual" for s in custom for x in s.strategy.stages or [])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_rollouts_are_refused_by_the_models(case: InvalidCase) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelRollout.model_validate(case.manifest())
    assert (case.model_error or case.api_error) in str(refused.value)


def test_presets_expand_to_their_weights_with_the_stage_settings() -> None:
    strategy = Strategy(preset="5-10-25-50-100", stage_duration="2m", min_samples=50)
    stages = strategy.resolved_stages()
    assert [s.weight for s in stages] == [5, 10, 25, 50, 100]
    assert {s.duration for s in stages} == {"2m"}
    assert {s.min_samples for s in stages} == {50}
    assert Strategy(preset="1-5-25-100").resolved_stages()[0].duration == "5m"


def test_wire_form_is_camel_case_without_unset_fields() -> None:
    wire = ModelRollout.model_validate(valid_rollout()).to_wire()
    assert wire["spec"]["trafficRouting"]["gatewayAPI"]["httpRoute"] == "model"
    assert "minSamples" in wire["spec"]["strategy"]["stages"][1]
    assert "modelVersion" not in wire["spec"]["stable"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25)],
)
def test_durations_parse_like_go(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5d", "-5s", "1m 30s"])
def test_non_durations_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_promql_durations_are_whole_and_compact() -> None:
    assert format_promql_duration(parse_duration("90s")) == "1m30s"
    assert format_promql_duration(parse_duration("2h")) == "2h"
    assert format_promql_duration(parse_duration("100ms")) == "1s"
