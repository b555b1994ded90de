"""One query for many rollouts, against a real Prometheus scraping real exporters:
a grouped answer split by rollout is each rollout's own answer, and rollouts that
ask together through the operator's metrics source cost one request."""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modelrollout.core.types import Value
from modelrollout.egress import AddressPolicy
from modelrollout.metrics import grouping
from modelrollout.metrics.batching import split
from modelrollout.metrics.prometheus import PrometheusSource
from modelrollout.metrics.template import render, render_open
from testbed import Prometheus, free_port, procs
from testbed.prometheus import values

from .scenario import Exporters

NAMESPACE = f"shared-{uuid.uuid4().hex[:6]}"
# Deployment -> its error rate: d0 serves no 500s at all, so it has no such series.
ERRORS = {"d0": 0.0, "d1": 0.1, "d2": 0.3, "d3": 0.5}
SELECT = 'namespace="{{namespace}}",deployment="{{candidate.deployment}}"'
GAUGE = f'max(test_value{{{SELECT},kind="a"}})'
# d0 has no kind="b" series at all: only its own query's `or vector(0)` says 0.
FILLED = (
    f'(sum(test_value{{{SELECT},kind="b"}}) or vector(0)) / sum(test_value{{{SELECT},kind="a"}})'
)
TEMPLATES = {
    "error-rate": (
        f'(sum(rate(model_requests_total{{{SELECT},code="500"}}[5s])) or vector(0))'
        f" / sum(rate(model_requests_total{{{SELECT}}}[5s]))"
    ),
    "p99": (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(model_request_duration_seconds_bucket{{{SELECT}}}[5s])))"
    ),
    "share-by-code": (
        f"sum by (code) (rate(model_requests_total{{{SELECT}}}[5s]))"
        f" / ignoring(code) group_left sum(rate(model_requests_total{{{SELECT}}}[5s]))"
    ),
    "busiest-code": f"topk(1, rate(model_requests_total{{{SELECT}}}[5s]))",
    "buckets": f"sum by (le) (increase(model_request_duration_seconds_bucket{{{SELECT}}}[5s]))",
    "filled": FILLED,
    "by-deployment": f"sum by (deployment) (rate(model_requests_total{{{SELECT}}}[5s]))",
}


def variables(deployment: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "candidate.deployment": deployment}


@pytest.fixture
def fleet(prometheus: Prometheus, spawn: Callable[..., procs.Proc]) -> Exporters:
    ports = {name: free_port() for name in ERRORS}
    for seed, (name, port) in enumerate(ports.items()):
        argv = [sys.executable, "-m", "testbed.exporter", "--port", str(port), "--seed", str(seed)]
        spawn(f"exporter-{name}", argv, env={"PYTHONPATH": "tests"})
    exporters = Exporters(ports)
    prometheus.set_targets(
        [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, "deployment": n}}
            for n, port in ports.items()
        ]
    )
    prometheus.wait_for(f'count(up{{namespace="{NAMESPACE}"}} == 1)', lambda r: values(r) == [4.0])
    for i, (name, rate) in enumerate(ERRORS.items()):
        gauges = {"a": str(i + 1)} | ({"b": str(i)} if i else {})
        exporters.configure(name, error_rate=rate, values=gauges)
    errors = f'count(rate(model_requests_total{{namespace="{NAMESPACE}",code="500"}}[5s]) > 0)'
    prometheus.wait_for(errors, lambda r: values(r) == [3.0], 30)
    time.sleep(6)  # until every 5s window is wholly after the configuration
    return exporters


def _same(share: list[dict[str, Any]], own: list[dict[str, Any]]) -> bool:
    def key(item: dict[str, Any]) -> str:
        return repr(sorted(item["metric"].items()))

    if sorted(map(key, share)) != sorted(map(key, own)):
        return False
    mine = {key(i): float(i["value"][1]) for i in own}
    return all(
        math.isclose(float(i["value"][1]), mine[key(i)], rel_tol=1e-9)
        or (math.isnan(float(i["value"][1])) and math.isnan(mine[key(i)]))
        for i in share
    )


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_a_grouped_answer_split_by_rollout_is_each_rollouts_own_answer(
    prometheus: Prometheus, fleet: Exporters, name: str
) -> None:
    template = TEMPLATES[name]
    opened = render_open(template, variables("d0"))
    plan = grouping.plan(opened.text, frozenset(opened.values))
    assert plan is not None, grouping.why_not(opened.text, frozenset(opened.values))
    at = time.time() - 2  # one evaluation time for the grouped and the own queries
    asked = {(deployment, NAMESPACE) for deployment in ERRORS}  # labels in name order
    shares = split(plan, prometheus.query(plan.query(asked), at)["result"])
    assert isinstance(shares, dict)
    compared = 0
    for deployment in ERRORS:
        own = prometheus.query(render(template, variables(deployment)), at)["result"]
        share = shares.get((deployment, NAMESPACE), [])  # grouping labels in name order
        assert own, f"{deployment} has no data at all: the comparison would prove nothing"
        assert _same(share, own), (deployment, share, own)
        compared += 1
    assert compared >= 3


def test_rollouts_asking_together_through_the_source_cost_one_request(
    prometheus: Prometheus, fleet: Exporters
) -> None:
    def asks(shared: bool) -> tuple[list[Any], list[str]]:
        methods: list[str] = []
        session = AddressPolicy.parse("127.0.0.0/8").session()
        session.hooks["response"].append(
            lambda response, **_: methods.append(response.request.method)
        )
        with ThreadPoolExecutor(4) as pool:
            source = PrometheusSource(
                prometheus.url, session=session, timeout_seconds=5, pool=pool, shared=shared
            )

            async def together() -> list[Any]:
                return await asyncio.gather(
                    *(
                        source.instant(
                            render(GAUGE, variables(d)), render_open(GAUGE, variables(d))
                        )
                        for d in ERRORS
                        for _ in range(3)
                    )
                )

            answers = asyncio.run(together())
        return answers, methods

    expected = [Value(float(i + 1)) for i in range(len(ERRORS)) for _ in range(3)]
    answers, methods = asks(shared=True)
    assert answers == expected
    assert methods == ["POST"]  # 12 asks, one grouped query
    answers, methods = asks(shared=False)
    assert answers == expected
    assert methods == ["GET"] * 12


def test_a_rollout_without_the_series_gets_what_its_own_fill_gives_in_the_same_query(
    prometheus: Prometheus, fleet: Exporters
) -> None:
    """d0 has no kind="b" series: its own `or vector(0)` gives 0, and so does the
    grouped query, which fills in one vector(0) per rollout asked."""
    methods: list[str] = []
    session = AddressPolicy.parse("127.0.0.0/8").session()
    session.hooks["response"].append(lambda response, **_: methods.append(response.request.method))
    with ThreadPoolExecutor(2) as pool:
        source = PrometheusSource(prometheus.url, session=session, timeout_seconds=5, pool=pool)

        async def together() -> list[Any]:
            return await asyncio.gather(
                *(
                    source.instant(render(FILLED, variables(d)), render_open(FILLED, variables(d)))
                    for d in ("d1", "d0", "d2", "d3")
                )
            )

        answers = asyncio.run(together())
    assert answers == [Value(1 / 2), Value(0.0), Value(2 / 3), Value(3 / 4)]
    assert methods == ["POST"]  # all four together, asked before the first went out
