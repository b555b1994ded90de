"""The shadow stage end to end: the comparator (`modelrollout-shadow`) in the request
path in front of the stable, as a user deploys it, following the rollout; the operator
judging the match rate it counts; real model servers, Prometheus and traffic.

The candidate is v2, whose scores agree with v1's within the comparator's tolerance
(stack.SHADOW_COMPARE); its `disagree` fault makes a fraction of its answers differ.
The client (the traffic driver) records the model version of every answer it got, so
an answer from the candidate could not pass unseen."""

from __future__ import annotations

import io
import json
import math
import random
import re
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from integration.conftest import Api, Obj, Operator, RouteRecorder, phase, stage, story
from integration.scenario import gateway_weights
from modelrollout.plugin.kube import Rollout
from modelrollout.plugin.views import status_view
from testbed import procs
from testbed.traffic import draw_row

from .stack import (
    CANDIDATE,
    FAULTS,
    ROUTE,
    SHADOW,
    STABLE,
    Stack,
    rollout,
    shadow_stage,
)

MATCH_SAMPLES = 300
DISAGREE = 0.15
STAGES = {
    "stages": [
        shadow_stage(duration="10s", min_samples=MATCH_SAMPLES),
        {"weight": 50, "duration": "5s"},
        {"weight": 100, "duration": "5s"},
    ]
}


def begin(api: Api, stack: Stack, candidate: dict[str, str] | None = None) -> RouteRecorder:
    stack.start(candidate, shadow=True)
    recorder = RouteRecorder(api, "httproute", ROUTE, gateway_weights)
    # The route's stable backend is the comparator's Service; the rollout says so.
    api.apply(rollout(stack.prometheus.url, STAGES, stable={"service": SHADOW}))
    return recorder


def match_rate(obj: Obj) -> Obj | None:
    analysis = (obj.get("status") or {}).get("analysis") or []
    return next((m for m in analysis if m["name"] == "match-rate"), None)


def comparisons(stack: Stack) -> dict[str, float]:
    """Every comparison the comparators made, by result: the counters' values, which
    start at 0 with each comparator process (all alive since the test began)."""
    query = (
        "sum by (result) (modelrollout_shadow_comparisons_total"
        f'{{namespace="{stack.namespace}",rollout="{ROUTE}"}})'
    )
    result = stack.prometheus.query(query)["result"]
    return {r["metric"]["result"]: float(r["value"][1]) for r in result}


def copies_stopped(stack: Stack) -> None:
    """Wait until the comparators copy no more (the rollout left its mirror stage), and
    their last copies are scraped on both sides."""
    stack.prometheus.wait_for(
        f'sum(modelrollout_shadow_share{{namespace="{stack.namespace}"}}) == 0', bool, 15
    )
    time.sleep(3)  # a follow interval, and a scrape of every target after it


def status_text(obj: Obj) -> str:
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(status_view(Rollout.from_object(obj), [], datetime.now(UTC)))
    return console.export_text()


def binomial_slack(p: float, n: float, sigmas: float = 4.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


def client_saw_only_the_stable(stack: Stack) -> dict[str, Any]:
    """Every answer the client got through the comparator came from v1, the stable;
    nothing was routed to the candidate, nor mirrored by the data plane."""
    assert stack.driver is not None
    counts = stack.driver.counts()
    assert counts.sent.get(CANDIDATE, 0) == 0, counts
    assert counts.mirrored == {}, counts  # a match-rate stage: the comparator copies
    assert set(counts.versions) == {SHADOW}, counts.versions
    assert set(counts.versions[SHADOW]) == {"v1"}, counts.versions
    assert counts.versions[SHADOW]["v1"] > 0
    return counts.versions


def test_a_candidate_answering_like_the_stable_passes_the_shadow_stage(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack)
    shadowing = api.wait_rollout(
        ROUTE, lambda o: stage(o) == 1 and o["status"].get("mirroring"), "the shadow stage", 60
    )
    assert shadowing["status"]["weight"] == 0
    # During the shadow stage: copies compared, and the client only ever saw the stable.
    stack.prometheus.wait_for(
        f'sum(modelrollout_shadow_comparisons_total{{namespace="{stack.namespace}"}}) > 0',
        bool,
        10,
    )
    during = client_saw_only_the_stable(stack)
    route = gateway_weights(api.get("httproute", ROUTE))
    assert route == (100, 0, False), f"the shadow stage ended before the check: {route}"
    # The stage ends on the tick that judges the match rate a pass, in one status write.
    judged = api.wait_rollout(
        ROUTE,
        lambda o: (match_rate(o) or {}).get("verdict") == "pass",
        "the match rate judged a pass",
        60,
    )
    judged_rate = match_rate(judged)
    assert judged_rate is not None
    assert judged_rate["stage"] == 1, judged_rate
    assert judged_rate["value"] == 1.0, judged_rate  # v2 never differs by more than 0.15
    assert "match-rate 1 within slo.min 0.95, abort.min 0.9 at stage 1" in judged_rate["message"]
    shown = status_text(judged)  # what `kubectl modelrollout status` shows of it
    assert "stages  ✓ shadow → " in shown or "stages  ▶ shadow → " in shown, shown
    assert re.search(r"match-rate[\s│]+1[\s│]+>= 0\.95[\s│]+>= 0\.9[\s│]+pass", shown), shown

    done = api.wait_phase(ROUTE, "Succeeded", "RolledBack", "Failed", timeout=90)
    assert phase(done) == "Succeeded", story(done)
    assert [h["reason"] for h in done["status"]["history"]] == [
        "Started", "StageComplete", "StageComplete", "Succeeded",
    ]  # fmt: skip
    recorder.stop()
    # The route: no data-plane mirror at any time (the comparator does the copying).
    assert recorder.distinct() == [(100, 0, False), (50, 50, False), (0, 100, False)]
    assert stack.driver is not None
    versions = stack.driver.counts().versions
    # Through the comparator the client got v1 throughout; v2 once routed to it: the
    # record tells the two apart.
    assert set(versions[SHADOW]) == {"v1"}, versions
    assert versions[SHADOW]["v1"] > during[SHADOW]["v1"]
    assert set(versions[CANDIDATE]) == {"v2"}, versions
    # Once the shadow stage is over the comparator follows the rollout and stops copying.
    copies_stopped(stack)
    shadowed = comparisons(stack)
    assert shadowed.get("match", 0) >= MATCH_SAMPLES, shadowed
    assert shadowed.get("mismatch", 0) == shadowed.get("error", 0) == 0, shadowed
    print(f"judged: {judged_rate['message']}; compared: {shadowed}; client saw: {versions}")


def test_a_candidate_disagreeing_on_15_percent_aborts_in_the_shadow_stage(
    api: Api, operator: Operator, stack: Stack
) -> None:
    recorder = begin(api, stack, {FAULTS["disagree"]: str(DISAGREE)})
    done = api.wait_phase(ROUTE, "RolledBack", "Succeeded", "Failed", timeout=90)
    assert phase(done) == "RolledBack", story(done)
    cause = done["status"]["history"][-2]
    assert (cause["reason"], cause["stage"]) == ("AbortThresholdBreached", 1), story(done)
    judged = match_rate(done)
    assert judged is not None
    assert judged["verdict"] == "abort", judged
    value = judged["value"]
    # At least MATCH_SAMPLES comparisons were judged: the rate is 0.85 but for chance.
    expected = 1 - DISAGREE
    assert abs(value - expected) <= binomial_slack(expected, MATCH_SAMPLES), judged
    assert value < 0.90, judged
    message = f"match-rate {value:.6g} < abort.min 0.9 at stage 1"
    assert message in cause["message"], cause
    [event, *_] = api.wait_events(
        ROUTE,
        lambda e: e["reason"] == "AbortThresholdBreached" and message in e["message"],
        "the abort, with the match rate",
    )
    assert event["type"] == "Warning"

    # Every comparison made: the fault's share of mismatches, within a binomial bound.
    copies_stopped(stack)
    shadowed = comparisons(stack)
    total = sum(shadowed.values())
    assert total >= MATCH_SAMPLES, shadowed
    assert shadowed.get("error", 0) == 0, shadowed
    rate = shadowed.get("match", 0) / total
    assert abs(rate - expected) <= binomial_slack(expected, total), (rate, shadowed)
    print(f"judged: {judged['message']}; event: {event['message']}; compared: {shadowed}")

    # The client never saw the candidate: no request routed there, every answer v1.
    client_saw_only_the_stable(stack)
    recorder.stop()
    assert {(s, c) for s, c, _ in recorder.distinct()} == {(100, 0)}
    # ...while the candidate did answer: the copies, which its own metrics counted.
    served = stack.prometheus.query(
        f'sum(model_requests_total{{namespace="{stack.namespace}",deployment="{CANDIDATE}"}})'
    )["result"]
    assert float(served[0]["value"][1]) >= total, served
    assert stack.driver is not None
    print(f"client saw: {stack.driver.counts().versions}; the candidate served {served}")


def test_the_supervisor_runs_the_comparator_in_front_of_the_stables_pods(
    api: Api, stack: Stack
) -> None:
    """The test bed's part: each comparator pod gets its own stable pod behind the
    Service its --stable names, is scraped with its namespace, answers as the stable,
    and follows a stable pod that goes away to one that serves."""
    stack.start(shadow=True)
    assert stack.backends is not None
    backends = stack.backends

    def comparators() -> list[Any]:
        return [b for b in backends.backends() if b.deployment == SHADOW]

    stable = set(backends.endpoints(api.namespace, STABLE))
    first = comparators()
    assert len(first) == 2
    assert all(b.serves == "shadow" and b.version is None for b in first)
    behind = [b.upstreams for b in first]
    assert all(len(u) == 2 and u[0] in stable for u in behind), behind
    assert behind[0][0] != behind[1][0], "both comparator pods in front of one stable pod"
    for backend in first:
        assert answer_version(backend.url) == "v1"
    stack.prometheus.wait_for(
        f'count(modelrollout_shadow_share{{namespace="{api.namespace}",rollout="{ROUTE}"}})',
        lambda r: [float(x["value"][1]) for x in r] == [2.0],
        15,
    )

    api.control_plane.kubectl("scale", "deployment", STABLE, "--replicas=1", "-n", api.namespace)
    procs.wait_until(
        lambda: (
            len(backends.endpoints(api.namespace, STABLE)) == 1
            and {b.upstreams[0] for b in comparators()}
            == set(backends.endpoints(api.namespace, STABLE))
            and len(comparators()) == 2
        ),
        60,
        "both comparators in front of the one stable pod left",
    )
    for backend in comparators():
        assert answer_version(backend.url) == "v1"


def answer_version(url: str) -> str:
    body = json.dumps({"features": draw_row(random.Random(0))}).encode()
    request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
    with direct.open(request, timeout=10) as response:
        version: str = json.load(response)["version"]
    return version
