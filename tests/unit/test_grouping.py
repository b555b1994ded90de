"""One query for many rollouts: which templates may share one, how it is rewritten,
and how the batches of a metrics source split the answer (metrics/grouping.py,
metrics/batching.py). Real Prometheus answers are checked in
tests/integration/test_shared_queries.py."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import urllib3

from modelrollout.core.types import QueryFailed, QueryRejected
from modelrollout.metrics import grouping
from modelrollout.metrics.batching import MAX_BATCH, Batches
from modelrollout.metrics.prometheus import PrometheusSource
from modelrollout.metrics.template import render, render_open

VARIABLES = {"namespace": "team-a", "candidate.deployment": "fraud-v2", "window": "1m"}
SELECT = 'namespace="{{namespace}}",deployment="{{candidate.deployment}}"'
ERROR_RATE = (
    f'(sum(rate(model_requests_total{{{SELECT},code=~"5.."}}[{{{{window}}}}])) or vector(0))'
    f" / sum(rate(model_requests_total{{{SELECT}}}[{{{{window}}}}]))"
)
P99 = f"histogram_quantile(0.99, sum by (le) (rate(latency_bucket{{{SELECT}}}[1m])))"


def plan_of(template: str) -> grouping.Plan | None:
    shared = render_open(template, VARIABLES)
    return grouping.plan(shared.text, frozenset(shared.values))


def why_not(template: str) -> str | None:
    shared = render_open(template, VARIABLES)
    return grouping.why_not(shared.text, frozenset(shared.values))


def test_the_open_form_leaves_the_quoted_values_open_and_renders_the_rest() -> None:
    shared = render_open(ERROR_RATE, VARIABLES)
    assert "team-a" not in shared.text
    assert "fraud-v2" not in shared.text
    assert "[1m]" in shared.text  # the window is the same for every rollout sharing it
    assert shared.values == {
        "__mro_namespace__": "team-a",
        "__mro_candidate_deployment__": "fraud-v2",
    }
    rendered = shared.text
    for sentinel, value in shared.values.items():
        rendered = rendered.replace(sentinel, value)
    assert rendered == render(ERROR_RATE, VARIABLES)


def test_an_error_rate_is_grouped_by_its_per_rollout_labels_and_filled_per_rollout() -> None:
    plan = plan_of(ERROR_RATE)
    assert plan is not None
    assert dict(plan.labels) == {
        "namespace": "__mro_namespace__",
        "deployment": "__mro_candidate_deployment__",
    }
    query = plan.query({("fraud-v2", "team-a"), ("fraud.v3", "team-a")})
    assert query.count("sum by (deployment, namespace)") == 2
    assert 'deployment=~"fraud-v2|fraud\\\\.v3"' in query  # RE2-escaped, then quoted
    assert 'namespace=~"team-a"' in query
    assert "__mro_" not in query
    assert plan.dropped == {"namespace", "deployment"}  # sum(...) of one has no labels
    # `or vector(0)` gives each rollout its own 0, labelled as its group
    assert plan.fills == ("vector(0)",)
    fill = 'label_replace(label_replace(vector(0), "deployment", "fraud-v2", "", ""), '
    assert fill + '"namespace", "team-a", "", "")' in query
    assert query.count("label_replace(label_replace(vector(0)") == 2
    assert " vector(0)" not in query.replace("(vector(0)", "")


def test_a_quantile_keeps_le_and_gains_the_grouping() -> None:
    plan = plan_of(P99)
    assert plan is not None
    assert "sum by (le, deployment, namespace)" in plan.grouped
    assert plan.dropped == {"namespace", "deployment"}
    assert not plan.fills


def test_a_share_is_labelled_as_the_rollouts_own_query_would_be() -> None:
    stripped, kept = plan_of(P99), plan_of(f"topk(1, rate(x{{{SELECT}}}[1m]))")
    assert stripped is not None
    assert kept is not None
    metric = {"namespace": "team-a", "deployment": "fraud-v2", "code": "500"}
    assert stripped.group_of(metric) == ("fraud-v2", "team-a")  # labels in name order
    assert stripped.share(metric) == {"code": "500"}
    assert not kept.dropped
    assert kept.share(metric) == metric
    assert stripped.group_of({"namespace": "team-a"}) is None


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (f'label_replace(x{{{SELECT}}}, "deployment", "y", "", "")', "label_replace()"),
        (f"scalar(x{{{SELECT}}})", "scalar()"),
        (f"absent(x{{{SELECT}}})", "absent()"),
        (f"sum without (deployment) (x{{{SELECT}}})", "without a per-rollout label"),
        (f"sum(x{{{SELECT}}}) / ignoring(deployment) sum(y{{{SELECT}}})", "ignores"),
        (f"sum(x{{{SELECT}}}) / on() sum(y{{{SELECT}}})", "on() without"),
        (f"sum(x{{{SELECT}}}) / rate(y{{{SELECT}}}[1m])", "keep different"),
        (f'sum(x{{{SELECT}}}) / sum(y{{namespace="{{{{namespace}}}}"}})', "same per-rollout"),
        ('sum(x{deployment=~"{{candidate.deployment}}"})', "regex or negation"),
        ('sum(x{deployment="{{candidate.deployment}}-canary"})', "no selector pins"),
        (f'sum(x{{{SELECT},pod=~"{{{{candidate.deployment}}}}-.*"}})', "outside a label matcher"),
        ("sum(x)", "no selector pins"),
        # the printer would lose the escape, or the subquery's colon
        (f'sum(x{{{SELECT},code=~"5\\\\d\\\\d"}})', "not parsed"),
        (f"max_over_time(x{{{SELECT}}}[5m:])", "without a step"),
        # vector() anywhere but `<one labelless series> or vector(c)`
        (f"vector(0) or sum(x{{{SELECT}}})", "vector() outside"),
        (f"sum(x{{{SELECT}}}) unless vector(1)", "vector() outside"),
        (f"sum by (code) (x{{{SELECT}}}) or vector(0)", "keep labels"),
        (f'count_values("deployment", x{{{SELECT}}})', "count_values()"),
        (f"sum by (namespace) (x{{{SELECT}}}) / sum(y{{{SELECT}}})", "keep different"),
        ('sum({__name__="{{candidate.deployment}}",namespace="{{namespace}}"})', "cannot group"),
        ('sum(x{deployment="{{candidate.deployment}}"} ', "not parsed"),
    ],
)
def test_templates_that_could_answer_differently_are_asked_once_per_rollout(
    template: str, reason: str
) -> None:
    assert plan_of(template) is None
    said = why_not(template)
    assert said is not None
    assert reason in said


def test_a_label_the_own_query_keeps_stays_on_its_share() -> None:
    plan = plan_of(f"sum by (deployment) (x{{{SELECT}}})")
    assert plan is not None
    assert plan.dropped == {"namespace"}
    assert plan.share({"namespace": "team-a", "deployment": "d"}) == {"deployment": "d"}


def test_a_fill_after_a_quantile_is_shared() -> None:
    plan = plan_of(f"{P99} or vector(0)")
    assert plan is not None
    assert plan.fills == ("vector(0)",)


def test_on_and_ignoring_that_keep_the_grouping_are_shared() -> None:
    by_code = f"sum by (code) (x{{{SELECT}}}) / ignoring(code) group_left sum(x{{{SELECT}}})"
    matched = f"sum(x{{{SELECT}}}) / on(namespace, deployment) sum(y{{{SELECT}}})"
    assert plan_of(by_code) is not None
    plan = plan_of(matched)
    assert plan is not None
    assert plan.dropped == {"namespace", "deployment"}


# -- batches -----------------------------------------------------------------------


class Recorder:
    """A stand-in for Prometheus' HTTP API that answers from a table of groups."""

    def __init__(self, answer: Any = None) -> None:
        self.asked: list[str] = []
        self.answer = answer
        self.release = asyncio.Event()

    async def run(self, query: str) -> Any:
        self.asked.append(query)
        await self.release.wait()
        if self.answer is not None:
            return self.answer
        return [
            {"metric": {"namespace": "team-a", "deployment": d}, "value": [1, str(i)]}
            for i, d in enumerate(("a", "b", "c"))
        ]


def ask(batches: Batches, plan: grouping.Plan, deployment: str) -> Any:
    return batches.ask(plan, (deployment, "team-a"))


def test_asks_made_while_a_query_flies_go_out_together_in_the_next() -> None:
    async def scenario() -> None:
        plan = plan_of(P99)
        assert plan is not None
        recorder = Recorder()
        batches = Batches(recorder.run)
        first = asyncio.ensure_future(ask(batches, plan, "a"))
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(ask(batches, plan, d)) for d in ("b", "c", "d", "b")]
        await asyncio.sleep(0)
        assert len(recorder.asked) == 1  # the first went out alone, at once
        recorder.release.set()
        answers = await asyncio.gather(first, *later)
        assert len(recorder.asked) == 2
        assert 'deployment=~"b|c|d"' in recorder.asked[1]
        assert [a and a[0]["value"][1] for a in answers] == ["0", "1", "2", [], "1"]
        assert answers[1] == [{"metric": {}, "value": [1, "1"]}]

    asyncio.run(scenario())


def test_a_failed_grouped_query_is_every_askers_failure() -> None:
    async def scenario() -> None:
        plan = plan_of(P99)
        assert plan is not None
        recorder = Recorder(QueryFailed("HTTP 503"))
        recorder.release.set()
        batches = Batches(recorder.run)
        answers = await asyncio.gather(*(ask(batches, plan, d) for d in ("a", "b")))
        assert answers == [QueryFailed("HTTP 503")] * 2

    asyncio.run(scenario())


def test_a_malformed_grouped_answer_sends_the_rollout_to_its_own_query() -> None:
    async def scenario() -> None:
        plan = plan_of(P99)
        assert plan is not None
        recorder = Recorder([{"value": [1, "2"]}])
        recorder.release.set()
        answer = await ask(Batches(recorder.run), plan, "a")
        assert answer is None

    asyncio.run(scenario())


def test_a_batch_holds_at_most_max_batch_asks() -> None:
    async def scenario() -> None:
        plan = plan_of(P99)
        assert plan is not None
        recorder = Recorder([])
        batches = Batches(recorder.run)
        first = asyncio.ensure_future(ask(batches, plan, "first"))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(ask(batches, plan, f"d{i}")) for i in range(MAX_BATCH + 1)]
        await asyncio.sleep(0)
        recorder.release.set()
        await asyncio.gather(first, *rest)
        assert len(recorder.asked) == 3
        assert recorder.asked[1].count("|") == MAX_BATCH - 1

    asyncio.run(scenario())


def test_a_refused_or_too_large_grouped_answer_sends_each_to_its_own_query() -> None:
    """Too many samples or an execution error may come from one rollout's series:
    no verdict on the others, who are told to ask their own (None)."""

    async def scenario() -> None:
        plan = plan_of(P99)
        assert plan is not None
        for failure in (
            QueryRejected("parse error"),
            QueryFailed("HTTP 422: execution: query processing would load too many samples"),
            QueryFailed("HTTP 200: response larger than 8388608 bytes"),
        ):
            recorder = Recorder(failure)
            recorder.release.set()
            batches = Batches(recorder.run)
            answers = await asyncio.gather(*(ask(batches, plan, d) for d in ("a", "b")))
            assert answers == [None, None], failure

    asyncio.run(scenario())


class _Recording(requests.Session):
    """A transport that records each request and answers one sample."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.methods.append(str(method))
        response = requests.Response()
        response.status_code = 200
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        response.raw = urllib3.HTTPResponse(io.BytesIO(body), preload_content=False)
        return response


def test_an_empty_value_is_asked_by_its_own_query() -> None:
    """`model_version=""` also matches series without the label, which a grouped
    answer files under nobody: the rollout asks its own."""
    template = 'sum(x{deployment="{{candidate.deployment}}",version="{{candidate.modelVersion}}"})'
    session = _Recording()
    with ThreadPoolExecutor(1) as pool:
        source = PrometheusSource(
            "http://prometheus", session=session, timeout_seconds=1, pool=pool
        )
        for version in ("", "v2"):
            values = {"candidate.deployment": "d", "candidate.modelVersion": version}
            asyncio.run(source.instant(render(template, values), render_open(template, values)))
    assert session.methods == ["GET", "POST"]
