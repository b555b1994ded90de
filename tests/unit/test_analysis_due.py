"""Prometheus is asked only while a stage is being judged."""

from __future__ import annotations

from world import T0, World, gateway_spec

from modelrollout.api.spec import Stage
from modelrollout.controller.analysis import queries as rendered
from modelrollout.core.context import StageContext, variables_for
from modelrollout.core.phases import analysis_due
from modelrollout.core.types import Judgement

ANALYSIS = {"interval": "5s", "prometheus": {"address": "http://p:9090"}}
STAGES = {
    "stages": [
        {"weight": 10, "duration": "5s", "approval": "Manual"},
        {"weight": 100, "duration": "5s"},
    ]
}


def test_queries_run_while_judging_and_while_blind_only() -> None:
    world = World(gateway_spec(strategy=STAGES, analysis=ANALYSIS))
    assert not analysis_due(world.spec, world.status)  # nothing moved yet: preflight only
    world.tick()
    assert world.status.phase == "Progressing"
    assert analysis_due(world.spec, world.status)
    world.judgement = Judgement("pause", "AnalysisUnavailable", "Prometheus unreachable")
    world.tick()
    assert world.status.phase == "Paused"
    assert analysis_due(world.spec, world.status)  # to notice that it sees again
    world.judgement = Judgement("pass")
    world.run_until(lambda w: w.status.history[-1].reason == "AwaitingApproval")
    world.judgement = None  # nothing is queried while it waits for a person
    assert not analysis_due(world.spec, world.status)
    paused = world.spec.model_copy(update={"paused": True})
    world.action = "promote"
    world.tick()
    assert world.status.phase == "Progressing"
    assert not analysis_due(paused, world.status)
    world.action = "pause"
    world.tick()
    assert not analysis_due(world.spec, world.status)


def test_a_compare_metric_with_thresholds_judges_the_candidate() -> None:
    query = 'sum(rate(errors{deployment="{{target.deployment}}"}[{{interval}}]))'
    compare = {"direction": "increase"}
    metric = {"name": "errors", "query": query, "slo": {"max": 0.1}, "compare": compare}
    spec = gateway_spec(analysis={**ANALYSIS, "metrics": [metric]})
    assert spec.analysis is not None
    context = StageContext(
        namespace="ns",
        analysis=spec.analysis,
        drift_gate=None,
        stage=Stage(weight=5, duration="5s"),
        number=1,
        started=T0,
        now=T0,
        window="30s",
        variables=variables_for(spec, "ns", 5, "5s", "30s"),
    )
    queries = rendered(context)
    assert queries["errors"] == 'sum(rate(errors{deployment="v2"}[5s]))'
    assert queries["errors@candidate"] == queries["errors"]
    assert queries["errors@stable"] == 'sum(rate(errors{deployment="v1"}[5s]))'
