"""Analysis against a real Prometheus scraping real exporter processes on loopback,
with the operator running: thresholds, blindness, no data, comparison."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.controller.adapters import Adapters
from modelrollout.core.types import Value
from modelrollout.egress import AddressPolicy
from modelrollout.kube.client import Kube
from modelrollout.ports import MetricsSource
from testbed import Prometheus, free_port, procs
from testbed.prometheus import values
from testbed.tcpproxy import TcpProxy

from .conftest import Api, Obj, Operator, condition, phase, stage, story
from .scenario import Exporters, eventually, setup

LOOPBACK = AddressPolicy.parse("127.0.0.0/8")  # the test servers

INTERVAL = 5
SELECT = 'namespace="{{namespace}}",deployment="{{candidate.deployment}}"'
ERROR_RATE = (
    f'sum(rate(model_requests_total{{{SELECT},code="500"}}[{{{{interval}}}}]))'
    f" / sum(rate(model_requests_total{{{SELECT}}}[{{{{interval}}}}]))"
)


@pytest.fixture
def models(api: Api, prometheus: Prometheus, spawn: Callable[..., procs.Proc]) -> Exporters:
    ports = {name: free_port() for name in ("model-v1", "model-v2")}
    for seed, (name, port) in enumerate(ports.items()):
        argv = [sys.executable, "-m", "testbed.exporter", "--port", str(port), "--seed", str(seed)]
        spawn(f"exporter-{name}", argv, env={"PYTHONPATH": "tests"})
    prometheus.set_targets(
        [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {"namespace": api.namespace, "deployment": name},
            }
            for name, port in ports.items()
        ]
    )
    prometheus.wait_for(
        f'count(up{{namespace="{api.namespace}"}} == 1)', lambda r: values(r) == [2.0], 30
    )
    return Exporters(ports)


def analysis(prometheus: Prometheus, *metrics: Obj, **extra: Any) -> Obj:
    return {
        "interval": f"{INTERVAL}s",
        "prometheus": {"address": prometheus.url, "timeout": "3s"},
        "metrics": list(metrics),
        **extra,
    }


def error_rate(slo: float = 0.05, abort: float = 0.3) -> Obj:
    return {"name": "error-rate", "query": ERROR_RATE, "slo": {"max": slo}, "abort": {"max": abort}}


STAGES = [{"weight": 10, "duration": "6s"}, {"weight": 50, "duration": "6s"}]
STAGES.append({"weight": 100, "duration": "4s"})


def metric(obj: Obj, name: str) -> Obj:
    return next(m for m in obj["status"]["analysis"] if m["name"] == name)


def test_a_healthy_candidate_promotes(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    samples = f"sum(increase(model_requests_total{{{SELECT}}}[{{{{window}}}}]))"
    spec = analysis(prometheus, error_rate(), samplesQuery=samples)
    stages = [dict(s, minSamples=100) for s in STAGES]
    setup(api, "gatewayAPI", {"stages": stages}, analysis=spec)
    seen = api.wait_rollout(
        "model", lambda o: bool(o.get("status", {}).get("analysis")), "a first analysis", 60
    )
    first = metric(seen, "error-rate")
    assert first["verdict"] == "pass"
    assert first["value"] == 0
    assert first["slo"] == {"max": 0.05}
    assert first["abort"] == {"max": 0.3}
    done = api.wait_phase("model", "Succeeded", timeout=90)
    assert done["status"]["samples"]["count"] >= 100
    assert done["status"]["samples"]["required"] == 100


def test_an_abort_breach_rolls_back_within_one_interval(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    stages = [{"weight": 10, "duration": "4s"}, {"weight": 50, "duration": "10m"}]
    stages.append({"weight": 100, "duration": "4s"})
    read = setup(api, "gatewayAPI", {"stages": stages}, analysis=analysis(prometheus, error_rate()))
    api.wait_rollout("model", lambda o: stage(o) == 2, "stage 2", 60)
    eventually(read, (50, 50, False))
    models.configure("model-v2", error_rate=0.9)
    query = ERROR_RATE.replace("{{namespace}}", api.namespace)
    query = query.replace("{{candidate.deployment}}", "model-v2").replace("{{interval}}", "5s")
    prometheus.wait_for(query, lambda r: bool(values(r)) and values(r)[0] > 0.3, 30)
    visible = time.monotonic()
    eventually(read, (100, 0, False), timeout=INTERVAL + 10)
    elapsed = time.monotonic() - visible
    assert elapsed <= INTERVAL + 2, f"weight reached 0 {elapsed:.1f}s after the breach"
    rolled_back = api.wait_phase("model", "RolledBack")
    history = rolled_back["status"]["history"]
    assert history[-2]["reason"] == "AbortThresholdBreached"
    assert "error-rate" in history[-2]["message"]
    assert "abort.max 0.3" in history[-2]["message"]
    assert "stage 2" in history[-2]["message"]
    [event, *_] = api.wait_events(
        "model", lambda e: e["reason"] == "AbortThresholdBreached", "AbortThresholdBreached"
    )
    assert "error-rate" in event["message"]
    assert "abort.max 0.3" in event["message"]
    _the_operator_counted_it(api, operator)


def _samples(
    operator: Operator, namespace: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(operator.metrics())
    return {
        (
            sample.name,
            tuple(sorted((k, v) for k, v in sample.labels.items() if k != "namespace")),
        ): sample.value
        for family in families
        for sample in family.samples
        if sample.labels.get("namespace", namespace) == namespace
    }


def _the_operator_counted_it(api: Api, operator: Operator) -> None:
    """Its own metrics say the same as the status, and go when the rollout goes."""
    ns, rollout = api.namespace, (("name", "model"),)
    seen = _samples(operator, ns)
    assert seen[("modelrollout_phase", (("name", "model"), ("phase", "RolledBack")))] == 1
    assert seen[("modelrollout_phase", (("name", "model"), ("phase", "Progressing")))] == 0
    assert seen[("modelrollout_weight", rollout)] == 0
    reason = (("name", "model"), ("reason", "AbortThresholdBreached"))
    assert seen[("modelrollout_rollbacks_total", reason)] == 1
    passes = (("metric", "error-rate"), ("name", "model"), ("verdict", "pass"))
    aborts = (("metric", "error-rate"), ("name", "model"), ("verdict", "abort"))
    assert seen[("modelrollout_analysis_checks_total", passes)] >= 1
    assert seen[("modelrollout_analysis_checks_total", aborts)] == 1
    assert seen[("modelrollout_reconcile_duration_seconds_count", ())] > 0
    assert seen[("modelrollout_prometheus_query_duration_seconds_count", ())] > 0
    assert seen[("modelrollout_reconcile_errors_total", ())] == 0
    api.control_plane.kubectl("delete", "mro", "model", "-n", ns)
    deadline = time.monotonic() + 20
    while any(("name", "model") in labels for _, labels in _samples(operator, ns)):
        assert time.monotonic() < deadline, "the deleted rollout's series stayed"
        time.sleep(0.5)


def test_a_failing_slo_holds_then_rolls_back_after_the_failure_limit(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    models.configure("model-v2", error_rate=0.15)
    spec = analysis(prometheus, error_rate(slo=0.05, abort=0.6), failureLimit=3)
    read = setup(api, "gatewayAPI", {"stages": STAGES}, analysis=spec)
    held = api.wait_rollout(
        "model",
        lambda o: (
            bool(o.get("status", {}).get("analysis"))
            and metric(o, "error-rate")["consecutiveFailures"] == 2
        ),
        "two failed checks",
        60,
    )
    assert stage(held) == 1
    assert phase(held) == "Progressing", story(held)
    assert read() == (90, 10, False)
    rolled_back = api.wait_phase("model", "RolledBack", timeout=30)
    assert rolled_back["status"]["history"][-2]["reason"] == "FailureLimitReached"
    failures = api.wait_events("model", lambda e: e["reason"] == "AnalysisFailed", "AnalysisFailed")
    assert len(failures) >= 2
    assert "slo.max 0.05" in failures[0]["message"]


def test_prometheus_down_pauses_without_moving_then_resumes(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    stages = [{"weight": 10, "duration": "10s"}, {"weight": 100, "duration": "3s"}]
    read = setup(api, "gatewayAPI", {"stages": stages}, analysis=analysis(prometheus, error_rate()))
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    prometheus.kill()
    paused = api.wait_phase("model", "Paused", timeout=30)
    unavailable = condition(paused, "AnalysisUnavailable")
    assert unavailable is not None
    assert unavailable["status"] == "True"
    time.sleep(2 * INTERVAL)
    assert (phase(api.rollout("model")), stage(api.rollout("model")), read()) == (
        "Paused",
        1,
        (90, 10, False),
    )
    prometheus.restart()
    done = api.wait_phase("model", "Succeeded", timeout=60)
    again = condition(done, "AnalysisUnavailable")
    assert again is not None
    assert again["status"] == "False"


def test_a_stage_begun_by_a_slow_pass_lasts_its_duration_at_its_weight(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    """Found by the chaos soak: the pass that began a stage dated it from its own start,
    so when its queries waited on a slow Prometheus the stage was over soon after its
    weight was written. The pass that starts stage 1 here waits about 8 s (4 s each
    way through the proxy); the link is fast again once the weight is written."""
    with TcpProxy(prometheus.port) as proxy:
        proxy.set_mode("latency", delay=4.0)
        spec = analysis(prometheus, error_rate())
        spec["prometheus"] = {"address": proxy.url, "timeout": "30s"}
        stages = [{"weight": 10, "duration": "6s"}, {"weight": 100, "duration": "2s"}]
        read = setup(api, "gatewayAPI", {"stages": stages}, analysis=spec)
        written: dict[int, float] = {}
        deadline = time.monotonic() + 120
        while 100 not in written and time.monotonic() < deadline:
            weight = read()[1]
            if weight not in written:
                written[weight] = time.monotonic()
                if weight == 10:
                    proxy.set_mode("pass")
            time.sleep(0.1)
        done = api.wait_phase("model", "Succeeded", "RolledBack", "Failed", timeout=60)
        assert phase(done) == "Succeeded", story(done)
        assert {10, 100} <= set(written), written
        # status timestamps have whole seconds, so a start may read up to 1 s early
        assert written[100] - written[10] >= 6 - 1, story(done)


def test_prometheus_down_with_rollback_policy_rolls_back_after_the_error_limit(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    spec = analysis(prometheus, error_rate(), errorLimit=2, noDataPolicy="Rollback")
    stages = [{"weight": 10, "duration": "10m"}, {"weight": 100, "duration": "3s"}]
    read = setup(api, "gatewayAPI", {"stages": stages}, analysis=spec)
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    prometheus.kill()
    rolled_back = api.wait_phase("model", "RolledBack", timeout=40)
    assert rolled_back["status"]["history"][-2]["reason"] == "NoDataPolicy"
    assert read() == (100, 0, False)


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ('sum(no_such_metric{namespace="{{namespace}}"})', "empty"),
        ('max(test_value{kind="nan"})', "nan"),
        ('max(test_value{kind="inf"})', "inf"),
        ("test_value", "multiple-series"),
    ],
)
def test_a_result_that_is_not_one_finite_sample_holds(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters, query: str, kind: str
) -> None:
    models.configure("model-v2", values={"nan": "NaN", "inf": "Inf", "one": 1})
    prometheus.wait_for("count(test_value)", lambda r: values(r) == [3.0], 30)
    judged = {"name": "judged", "query": query, "slo": {"max": 10}}
    stages = [{"weight": 10, "duration": "2s"}, {"weight": 100, "duration": "2s"}]
    read = setup(api, "gatewayAPI", {"stages": stages}, analysis=analysis(prometheus, judged))
    held = api.wait_rollout(
        "model",
        lambda o: (
            bool(o.get("status", {}).get("analysis"))
            and o.get("status", {}).get("analysisErrors", 0) >= 2
        ),
        "two ticks without data",
        60,
    )
    status = metric(held, "judged")
    assert (status["verdict"], status["noData"]) == ("nodata", kind)
    assert stage(held) == 1
    assert phase(held) == "Progressing", story(held)
    assert read() == (90, 10, False)


def stalled_on(
    api: Api, prometheus: Prometheus, metric: Obj
) -> tuple[Obj, Callable[[], tuple[Any, ...]]]:
    """A rollout analysed on `metric` alone, run until it Failed: its Stalled condition,
    and the reader of its routing state."""
    read = setup(api, "gatewayAPI", {"stages": STAGES}, analysis=analysis(prometheus, metric))
    failed = api.wait_phase("model", "Failed", timeout=30)
    stalled = condition(failed, "Stalled")
    assert stalled is not None
    return stalled, read


def test_promql_prometheus_refuses_fails_before_any_traffic_moves(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    broken = {"name": "broken", "query": "sum(rate(model_requests_total[5m]) by", "slo": {"max": 1}}
    stalled, read = stalled_on(api, prometheus, broken)
    assert stalled["reason"] == "InvalidQuery"
    assert "Prometheus refused the query of broken" in stalled["message"]
    assert "parse error" in stalled["message"]
    time.sleep(3)
    assert read() == (100, 0, False)
    assert stage(api.rollout("model")) == 0


def test_an_unknown_template_variable_fails_naming_it(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    typo = {"name": "typo", "query": 'up{deployment="{{canidate.deployment}}"}', "slo": {"max": 1}}
    stalled, read = stalled_on(api, prometheus, typo)
    assert stalled["reason"] == "UnknownVariable"
    assert "canidate.deployment" in stalled["message"]
    assert read() == (100, 0, False)


def test_a_hostile_model_version_cannot_change_the_query(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    """Unescaped, this version would close the matcher and make the query `up`-like,
    which has a value and would pass; escaped, it matches nothing and holds."""
    probe = {"name": "probe", "query": 'count(up{version="{{candidate.modelVersion}}"})'}
    probe["slo"] = {"max": 10}
    stages = [{"weight": 10, "duration": "2s"}, {"weight": 100, "duration": "2s"}]
    hostile = 'x"} or vector(5) or up{a=~"'
    spec = analysis(prometheus, probe)
    setup(api, "gatewayAPI", {"stages": stages}, analysis=spec, candidate_version=hostile)
    held = api.wait_rollout(
        "model", lambda o: bool(o.get("status", {}).get("analysis")), "a first analysis", 60
    )
    time.sleep(2 * INTERVAL)
    held = api.rollout("model")
    assert metric(held, "probe")["verdict"] == "nodata"
    assert stage(held) == 1


LATENCY = 'avg(model_latency_seconds{namespace="{{namespace}}",deployment="{{target.deployment}}"})'


@pytest.mark.parametrize(
    ("candidate_latency", "min_points", "verdict"),
    [(0.13, 5, "fail"), (0.1, 5, "pass"), (0.1, 1000, "inconclusive")],
)
def test_comparison_with_the_stable(
    api: Api,
    operator: Operator,
    prometheus: Prometheus,
    models: Exporters,
    candidate_latency: float,
    min_points: int,
    verdict: str,
) -> None:
    models.configure("model-v2", latency=candidate_latency)
    compare = {"direction": "increase", "tolerance": 0.1, "minPoints": min_points, "step": "1s"}
    judged = {"name": "latency", "query": LATENCY, "compare": compare}
    stages = [{"weight": 10, "duration": "20s"}, {"weight": 100, "duration": "2s"}]
    spec = analysis(prometheus, judged, failureLimit=1)
    read = setup(api, "gatewayAPI", {"stages": stages}, analysis=spec)
    seen = api.wait_rollout(
        "model",
        lambda o: (
            bool(o.get("status", {}).get("analysis")) and metric(o, "latency")["verdict"] == verdict
        ),
        f"a {verdict} comparison",
        60,
    )
    latency = metric(seen, "latency")
    if verdict == "fail":
        assert latency["effect"] > 1.2
        assert latency["pValue"] < 0.05
        api.wait_phase("model", "RolledBack", timeout=30)
    elif verdict == "pass":
        assert 0.9 < latency["effect"] < 1.1
        api.wait_phase("model", "Succeeded", timeout=60)
    else:
        time.sleep(25)
        still = api.rollout("model")
        assert stage(still) == 1
        assert metric(still, "latency")["verdict"] == "inconclusive"
        assert read() == (90, 10, False)


@pytest.mark.parametrize("token", ["s3cret", "wrong"])
def test_a_prometheus_behind_tls_a_token_and_a_tenant_header(
    api: Api,
    operator: Operator,
    prometheus: Prometheus,
    models: Exporters,
    spawn: Callable[..., procs.Proc],
    token: str,
) -> None:
    """The token and the CA come from Secrets, the tenant from headers. With the
    right token the analysis reads and the rollout promotes; with a wrong one the
    analysis is unavailable (blind), so it pauses before moving any traffic."""
    pki, port = api.control_plane.pki, free_port()
    argv = [
        sys.executable, "-m", "testbed.authproxy", "--port", str(port),
        "--upstream", prometheus.url, "--cert", str(pki.serving_cert),
        "--key", str(pki.serving_key), "--token", "s3cret", "--tenant", "team-a",
    ]  # fmt: skip
    proxy = spawn("authproxy", argv, env={"PYTHONPATH": "tests"})
    # A pass before the proxy listens is refused, which is blindness too, but not
    # the 401 this test is about.
    procs.wait_until(lambda: _accepts(port), 15, "the auth proxy to listen", proxy)
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "prometheus-auth"},
            "stringData": {"token": token, "ca.crt": pki.ca_cert.read_text()},
        }
    )
    spec = analysis(prometheus, error_rate())
    spec["prometheus"] = {
        "address": f"https://127.0.0.1:{port}",
        "timeout": "3s",
        "headers": {"X-Scope-OrgID": "team-a"},
        "bearerTokenSecretRef": {"name": "prometheus-auth", "key": "token"},
        "caSecretRef": {"name": "prometheus-auth", "key": "ca.crt"},
    }
    read = setup(api, "gatewayAPI", {"stages": STAGES}, analysis=spec)
    if token == "s3cret":
        done = api.wait_phase("model", "Succeeded", timeout=90)
        assert metric(done, "error-rate")["verdict"] == "pass"
        return
    blind = api.wait_phase("model", "Paused", timeout=30)
    unavailable = condition(blind, "AnalysisUnavailable")
    assert unavailable is not None
    assert unavailable["status"] == "True"
    assert "HTTP 401" in unavailable["message"]
    assert "bad or missing bearer token" in unavailable["message"]
    assert read() == (100, 0, False)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prometheus-auth"}}
    api.apply({**secret, "stringData": {"token": "s3cret", "ca.crt": pki.ca_cert.read_text()}})
    done = api.wait_phase("model", "Succeeded", timeout=90)  # the fixed token, next tick
    assert metric(done, "error-rate")["verdict"] == "pass"


def test_a_rotated_token_replaces_its_connection_instead_of_adding_one(
    api: Api, prometheus: Prometheus
) -> None:
    def token(value: str) -> None:
        meta = {"name": "prometheus-auth"}
        api.apply(
            {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"token": value}}
        )

    spec = ModelRolloutSpec.model_validate(
        {
            "stable": {"deployment": "v1"},
            "candidate": {"deployment": "v2"},
            "trafficRouting": {"replicas": {}},
            "strategy": {"preset": "1-5-25-100"},
            "analysis": {
                "prometheus": {
                    "address": prometheus.url,
                    "bearerTokenSecretRef": {"name": "prometheus-auth", "key": "token"},
                },
                "metrics": [{"name": "up", "query": "vector(1)", "slo": {"min": 1}}],
            },
        }
    )

    async def sources_over_a_rotation() -> tuple[list[MetricsSource], int, Any]:
        adapters = Adapters.for_kube(Kube(api.control_plane.api_client()), LOOPBACK, 1)
        sources, connection = adapters.connections, spec.analysis.prometheus
        try:
            token("first")
            seen = [await sources.source(connection, api.namespace) for _ in range(2)]
            token("second")
            seen += [await sources.source(connection, api.namespace) for _ in range(2)]
            reading = await seen[-1].instant("vector(1)")
            return seen, sources.connections, reading
        finally:
            await adapters.close()

    (first, again, rotated, kept), connections, reading = asyncio.run(sources_over_a_rotation())
    assert first is again  # unchanged credentials reuse the connection
    assert rotated is not first  # the new token is used from the next tick
    assert kept is rotated
    assert connections == 1  # replaced, not added: rotations do not pile up
    assert reading == Value(1.0)  # and it reads


def test_a_stage_short_of_samples_reports_count_rate_and_eta(
    api: Api, operator: Operator, prometheus: Prometheus, models: Exporters
) -> None:
    samples = f"sum(increase(model_requests_total{{{SELECT}}}[{{{{window}}}}]))"
    spec = analysis(prometheus, error_rate(), samplesQuery=samples)
    stages = [{"weight": 10, "duration": "1s", "minSamples": 1_000_000}]
    stages.append({"weight": 100, "duration": "1s"})
    setup(api, "gatewayAPI", {"stages": stages}, analysis=spec)

    def counted(obj: Obj) -> bool:
        seen = (obj.get("status") or {}).get("samples") or {}
        return seen.get("count", 0) > 0 and seen.get("etaSeconds") is not None

    held = api.wait_rollout("model", counted, "a sample count with an ETA", 60)
    seen = held["status"]["samples"]
    assert seen["required"] == 1_000_000
    assert 0 < seen["count"] < 1_000_000
    assert seen["ratePerSecond"] > 0
    expected = (1_000_000 - seen["count"]) / seen["ratePerSecond"]
    assert seen["etaSeconds"] == pytest.approx(expected, rel=1e-9)
    assert (phase(held), stage(held)) == ("Progressing", 1)
    assert f"samples {seen['count']:g} of 1000000" in held["status"]["message"]


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
