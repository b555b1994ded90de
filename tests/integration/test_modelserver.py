"""The end-to-end model server (e2e/modelserver/server.py) as a real process on loopback:
predictions, its metrics and their buckets, the fault knobs, bad input and shutdown.

No Kubernetes here: each test spawns servers on free ports and talks HTTP to them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from modelrollout.reference import ReferenceProblem, parse_reference
from testbed import free_port, procs
from testbed.paths import ROOT
from testbed.procs import Spawn

SERVER = ROOT / "e2e" / "modelserver" / "server.py"
ROW = {"amount": 95.0, "age": 40.0, "tenure": 6.0, "balance": 1000.0, "country": "DE"}
SCORE_DECILES = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "+Inf"]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@dataclass
class Scrape:
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def buckets(self, name: str, **labels: str) -> list[tuple[str, float]]:
        """(le, cumulative count) of one histogram series, in exposition order."""
        series = [s for s in self.samples if s.name == f"{name}_bucket"]
        return [
            (s.labels["le"], s.value)
            for s in series
            if {k: v for k, v in s.labels.items() if k != "le"} == labels
        ]

    def bins(self, name: str, **labels: str) -> list[float]:
        """Per-bin (non-cumulative) counts of one histogram series."""
        cumulative = [v for _, v in self.buckets(name, **labels)]
        return [b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False)]


@dataclass
class Server:
    proc: procs.Proc
    port: int

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Status and answer (JSON decoded when it is JSON); `body` bytes go verbatim."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, kind = error.code, error.read(), error.headers
        if kind.get_content_type() == "application/json":
            return status, json.loads(raw)
        return status, raw.decode()

    def predict(self, features: dict[str, Any]) -> tuple[int, Any]:
        return self.call("POST", "/predict", {"features": features})

    def score(self, features: dict[str, Any]) -> float:
        status, answer = self.predict(features)
        assert status == 200, answer
        score: float = answer["score"]
        return score

    def faults(self, change: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call("POST", "/admin/faults", change)
        assert status == 200, answer
        return dict(answer)

    def scrape(self) -> Scrape:
        status, text = self.call("GET", "/metrics")
        assert status == 200
        families = text_string_to_metric_families(text)
        return Scrape([s for family in families for s in family.samples])


Start = Callable[..., Server]


@pytest.fixture
def start(spawn: Spawn) -> Start:
    """`start(*args, env=...)`: a model server on a free port, once /healthz answers."""

    def _start(*args: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        argv = [sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port), *args]
        proc = spawn("modelserver", argv, env=env)
        server = Server(proc, port)
        procs.wait_until(lambda: _healthy(server), 15, "the model server's /healthz", proc)
        return server

    return _start


def _healthy(server: Server) -> bool:
    try:
        return server.call("GET", "/healthz") == (200, "ok\n")
    except OSError:
        return False


@pytest.fixture(scope="module")
def module() -> Iterator[ModuleType]:
    """server.py imported in-process, for its constants and its standalone reader."""
    spec = importlib.util.spec_from_file_location("e2e_modelserver", SERVER)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses look their module up
    spec.loader.exec_module(loaded)
    yield loaded
    del sys.modules[spec.name]


REFERENCE: dict[str, Any] = {
    "format": "rollouts.mlops.io/drift-reference-v1",
    "samples": 5000,
    "features": [
        # edges whose shortest text is long, huge, or tiny and negative
        {
            "name": "amount",
            "edges": [0.1 + 0.2, 50.5, 99.99999999999999, 1234567.891, 2.5e21],
            "proportions": [0.1, 0.2, 0.3, 0.2, 0.15, 0.05],
        },
        {"name": "age", "edges": [-1e-7, 18.0, 65.0], "proportions": [0.0, 0.1, 0.7, 0.2]},
        {"name": "clicks", "edges": [1.0, 2.0, 3.0], "proportions": [0.4, 0.3, 0.2, 0.1]},
        {"name": "country", "categories": ["US", "DE", "other"], "proportions": [0.5, 0.3, 0.2]},
    ],
    "score": {"name": "score", "edges": [0.25, 0.5, 0.75], "proportions": [0.25] * 4},
}


def write_reference(tmp_path: Path) -> tuple[Path, Path]:
    """The reference as a bare YAML file and as a ConfigMap manifest."""
    text = yaml.safe_dump(REFERENCE, sort_keys=False)
    assert yaml.safe_load(text) == REFERENCE  # the YAML floats round-trip exactly
    parse_reference(text)  # and it is a valid reference for the operator
    bare = tmp_path / "reference.yaml"
    bare.write_text(text)
    config_map = tmp_path / "configmap.yaml"
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-reference"},
        "data": {"reference.yaml": text},
    }
    config_map.write_text(yaml.safe_dump(manifest))
    return bare, config_map


def test_predict_scores_in_unit_interval_and_versions_differ(start: Start) -> None:
    v1, v2 = start("--version", "v1"), start("--version", "v2")
    at_mean = {**ROW, "amount": 100.0}  # every numeric feature at its training mean
    status, answer = v1.predict(at_mean)
    assert status == 200
    assert answer == {"score": pytest.approx(sigmoid(-0.30 + 0.15)), "version": "v1"}
    status, answer = v2.predict(at_mean)
    assert answer == {"score": pytest.approx(sigmoid(-0.28 + 0.20)), "version": "v2"}

    rows = [ROW, {**ROW, "amount": 180.0, "country": "IN"}, {**ROW, "age": 25.0}]
    scores = {version: [s.score(r) for r in rows] for version, s in (("v1", v1), ("v2", v2))}
    for version, values in scores.items():
        assert all(0 < s < 1 for s in values), (version, values)
    for a, b in zip(scores["v1"], scores["v2"], strict=True):
        assert a != b
        assert abs(a - b) < 0.1  # slightly different weights, similar scores
    assert scores["v1"][1] > scores["v1"][0]  # a larger amount raises the score

    status, answer = v1.call("POST", "/predict", {"instances": rows})
    assert status == 200
    assert answer == {"scores": pytest.approx(scores["v1"], rel=1e-12), "version": "v1"}


def test_metrics_move_with_requests(start: Start, module: ModuleType) -> None:
    server = start("--version", "v2")
    before = server.scrape()
    assert before.value("model_info", version="v2") == 1
    assert before.value("model_requests_total", code="200") == 0
    assert before.value("model_request_duration_seconds_count") == 0

    amounts = [20.0, 95.0, 300.0]
    for amount, country in zip(amounts, ["DE", "DE", "Atlantis"], strict=True):
        server.score({**ROW, "amount": amount, "country": country})
    server.score({k: v for k, v in ROW.items() if k != "country"})  # country is optional
    assert server.predict({"amount": 1.0})[0] == 400

    after = server.scrape()
    assert after.value("model_requests_total", code="200") == 4
    assert after.value("model_requests_total", code="400") == 1
    assert after.value("model_request_duration_seconds_count") == 5
    assert after.value("model_prediction_score_count") == 4
    assert [le for le, _ in after.buckets("model_prediction_score")] == SCORE_DECILES
    assert after.value("model_feature_value_count", feature="amount") == 4
    assert after.value("model_feature_value_sum", feature="amount") == sum(amounts) + 95.0
    assert after.value("model_feature_value_sum", feature="tenure") == 4 * 6.0
    # without a reference, the built-in edges: deciles of each feature's training normal
    for feature, edges in module.DEFAULT_EDGES.items():
        les = [le for le, _ in after.buckets("model_feature_value", feature=feature)]
        assert les == [*(repr(e) for e in edges), "+Inf"]
    assert after.bins("model_feature_value", feature="amount") == [1, 0, 0, 0, 2, 0, 0, 0, 0, 1]
    counted = {
        c: after.value("model_feature_category_total", feature="country", category=c)
        for c in ("US", "DE", "FR", "IN", "BR", "other")
    }
    assert counted == {"US": 0, "DE": 2, "FR": 0, "IN": 0, "BR": 0, "other": 1}


def test_concurrent_requests_are_all_counted(start: Start) -> None:
    server = start()
    rows = [{**ROW, "amount": float(a)} for a in range(0, 200, 10)]
    workers = [
        threading.Thread(target=lambda: [server.score(r) for r in rows for _ in range(2)])
        for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    scrape = server.scrape()
    n = 8 * 2 * len(rows)
    assert scrape.value("model_requests_total", code="200") == n
    assert scrape.value("model_feature_value_count", feature="amount") == n
    assert scrape.value("model_feature_value_sum", feature="amount") == 16 * sum(range(0, 200, 10))
    assert sum(scrape.bins("model_feature_value", feature="age")) == n
    assert scrape.value("model_prediction_score_count") == n


def test_feature_buckets_are_the_reference_edges(start: Start, tmp_path: Path) -> None:
    bare, config_map = write_reference(tmp_path)
    edges = {f["name"]: f["edges"] for f in REFERENCE["features"] if "edges" in f}
    for server in (start("--reference", str(bare)), start("--reference", str(config_map))):
        scrape = server.scrape()
        for feature, expected in edges.items():
            les = [le for le, _ in scrape.buckets("model_feature_value", feature=feature)]
            assert les[-1] == "+Inf"
            assert [float(le) for le in les[:-1]] == expected  # exactly, not just to 1e-9
        score_les = [le for le, _ in scrape.buckets("model_prediction_score")]
        assert score_les == ["0.25", "0.5", "0.75", "+Inf"]
        # features the reference leaves out keep the built-in edges; categories follow it
        assert len(scrape.buckets("model_feature_value", feature="tenure")) == 10
        categories = {
            s.labels["category"] for s in scrape.samples if s.name == "model_feature_category_total"
        }
        assert categories == {"US", "DE", "other"}

    # `le` counting: a value equal to an edge lands in that edge's bin
    server.score({**ROW, "amount": 50.5, "age": 18.0, "clicks": 3, "country": "FR"})
    server.score({**ROW, "amount": 0.30000000000000004, "age": -1e-7})  # no clicks: optional
    scrape = server.scrape()
    assert scrape.bins("model_feature_value", feature="amount") == [1, 1, 0, 0, 0, 0]
    assert scrape.bins("model_feature_value", feature="age") == [1, 1, 0, 0]
    assert scrape.bins("model_feature_value", feature="clicks") == [0, 0, 1, 0]
    other = scrape.value("model_feature_category_total", feature="country", category="other")
    assert other == 1  # FR is not among the reference's categories

    # clicks has no training std: its shift is absolute
    assert server.faults({"featureShift": {"clicks": 0.5}})["featureShift"] == {"clicks": 0.5}
    server.score({**ROW, "clicks": 3})
    assert server.scrape().bins("model_feature_value", feature="clicks") == [0, 0, 1, 1]


def test_standalone_reader_agrees_with_the_operator(
    module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, config_map = write_reference(tmp_path)
    text = bare.read_text()
    features, score = module.read_reference(text)
    ref = parse_reference(text)
    assert [_tuples(f) for f in features] == [
        _tuples((f.name, f.edges, f.categories)) for f in ref.features
    ]
    assert ref.score is not None
    assert _tuples(score) == _tuples((ref.score.name, ref.score.edges, None))

    monkeypatch.setitem(sys.modules, "modelrollout.reference", None)  # as in the image
    standalone = module.load_reference(config_map)
    assert "standalone reader" in standalone.source
    assert standalone.numeric["amount"] == tuple(REFERENCE["features"][0]["edges"])
    assert standalone.categorical["country"] == ("US", "DE", "other")
    monkeypatch.undo()
    assert module.load_reference(config_map).numeric == standalone.numeric

    broken = {
        "edges must be strictly increasing": {"edges": [1.0, 1.0]},
        "has 2 proportions for 3 bins": {"proportions": [0.5, 0.5]},
        "exactly one of edges": {"categories": ["a", "b", "c"]},
        "sum to": {"proportions": [0.5, 0.5, 0.5]},
    }
    for message, change in broken.items():
        feature = {"name": "x", "edges": [1.0, 2.0], "proportions": [0.2, 0.3, 0.5], **change}
        bad = yaml.safe_dump({**REFERENCE, "features": [feature]})
        with pytest.raises(module.BadReference, match=message):
            module.read_reference(bad)
        with pytest.raises(ReferenceProblem, match=message):
            parse_reference(bad)


def _tuples(dist: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(tuple(x) if isinstance(x, list) else x for x in dist)


def test_bad_reference_stops_the_server_with_a_message(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "reference.yaml"
    feature = {"name": "amount", "edges": [2.0, 1.0], "proportions": [0.2, 0.3, 0.5]}
    path.write_text(yaml.safe_dump({**REFERENCE, "features": [feature]}))
    argv = [sys.executable, SERVER, "--port", str(free_port()), "--reference", str(path)]
    proc = spawn("modelserver", argv)
    assert proc.popen is not None
    assert proc.popen.wait(15) == 2
    assert "edges must be strictly increasing" in proc.tail()


def test_error_rate_one_answers_500_and_counts_them(start: Start) -> None:
    for server in (start("--error-rate", "1.0"), start(env={"MODEL_ERROR_RATE": "1"})):
        assert server.call("GET", "/admin/faults")[1]["errorRate"] == 1.0
        for _ in range(5):
            status, answer = server.predict(ROW)
            assert status == 500
            assert "injected" in answer["error"]
        scrape = server.scrape()
        assert scrape.value("model_requests_total", code="500") == 5
        assert scrape.value("model_requests_total", code="200") == 0
        assert scrape.value("model_prediction_score_count") == 0  # failed: not scored

    half = start("--error-rate", "0.5", "--seed", "7")
    codes = [half.predict(ROW)[0] for _ in range(60)]
    assert set(codes) == {200, 500}
    assert 10 <= codes.count(500) <= 50
    scrape = half.scrape()
    assert scrape.value("model_requests_total", code="500") == codes.count(500)
    assert scrape.value("model_requests_total", code="200") == codes.count(200)


def test_faults_change_at_runtime(start: Start) -> None:
    server = start()
    quiet = {"errorRate": 0.0, "addedLatency": 0.0, "featureShift": {}, "disagree": 0.0}
    assert server.call("GET", "/admin/faults") == (200, quiet)
    assert server.predict(ROW)[0] == 200

    assert server.faults({"errorRate": 1.0}) == {**quiet, "errorRate": 1.0}
    assert server.predict(ROW)[0] == 500
    assert server.faults({"errorRate": 0, "addedLatency": 0.3})["addedLatency"] == 0.3
    began = time.monotonic()
    assert server.predict(ROW)[0] == 200
    assert time.monotonic() - began >= 0.3
    assert server.call("GET", "/admin/faults") == (200, {**quiet, "addedLatency": 0.3})

    scrape = server.scrape()
    assert scrape.value("model_requests_total", code="200") == 2
    assert scrape.value("model_requests_total", code="500") == 1
    durations = dict(scrape.buckets("model_request_duration_seconds"))
    assert durations["0.25"] == 2  # the slow one is above 0.25s
    assert durations["+Inf"] == 3
    assert scrape.value("model_request_duration_seconds_sum") >= 0.3

    rejected = {
        "errorRate must be a number in [0, 1]": {"errorRate": 2},
        "addedLatency must be": {"addedLatency": -1},
        "unknown keys": {"errorRates": 0.1},
        "not among": {"featureShift": {"country": 1}},
        "featureShift must be an object": {"featureShift": 1},
        "disagree must be a number in [0, 1]": {"disagree": 1.5},
        "not JSON": b"{",
    }
    for message, change in rejected.items():
        status, answer = server.call("POST", "/admin/faults", change)
        assert status == 400
        assert message in answer["error"]
    assert server.call("GET", "/admin/faults") == (200, {**quiet, "addedLatency": 0.3})


def test_disagree_moves_the_scores_of_a_seeded_fraction_of_answers(start: Start) -> None:
    plain = start()
    rows = [{**ROW, "amount": float(a)} for a in range(0, 400, 2)]  # 200 requests
    truth = [plain.score(r) for r in rows]

    def answers(server: Server) -> list[float]:
        return [server.score(r) for r in rows]

    def moved(scores: list[float]) -> list[bool]:
        for s, t in zip(scores, truth, strict=True):
            assert s == t or s == pytest.approx((t + 0.5) % 1.0, abs=1e-12), (s, t)
        return [s != t for s, t in zip(scores, truth, strict=True)]

    seeded = start("--disagree", "0.15", "--seed", "11")
    first = moved(answers(seeded))
    # Binomial(200, 0.15): mean 30, sd 5; 4.5 sd either side fails by chance ~1e-5.
    assert 8 <= sum(first) <= 52
    again = start("--seed", "11", env={"MODEL_DISAGREE": "0.15"})
    assert moved(answers(again)) == first  # the same seed, the same requests disagree
    assert seeded.scrape().value("model_prediction_score_count") == len(rows)

    # At runtime; a batch disagrees as a whole.
    assert seeded.faults({"disagree": 1.0})["disagree"] == 1.0
    status, answer = seeded.call("POST", "/predict", {"instances": rows[:3]})
    assert status == 200
    assert answer["scores"] == pytest.approx([(t + 0.5) % 1.0 for t in truth[:3]], abs=1e-12)
    assert moved(answers(seeded)) == [True] * len(rows)

    # The error dice are apart: turning disagree on leaves the error sequence as it was.
    plain_errors = start("--error-rate", "0.5", "--seed", "7")
    both = start("--error-rate", "0.5", "--disagree", "0.5", "--seed", "7")
    codes = [plain_errors.predict(ROW)[0] for _ in range(60)]
    assert [both.predict(ROW)[0] for _ in range(60)] == codes
    assert set(codes) == {200, 500}


def test_feature_shift_moves_observations_into_higher_buckets(start: Start) -> None:
    server = start()
    plain = server.score(ROW)  # amount 95: the bin (89.866, 100]
    assert server.faults({"featureShift": {"amount": 1.0}})["featureShift"] == {"amount": 1.0}
    shifted = server.score(ROW)  # one std (40) up: 135, the bin (133.665, 151.262]
    bins = server.scrape().bins("model_feature_value", feature="amount")
    assert bins == [0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert server.scrape().value("model_feature_value_sum", feature="amount") == 95 + 135
    assert server.scrape().bins("model_feature_value", feature="age")[4] == 2  # unshifted

    server.faults({"featureShift": {}})
    assert shifted > plain
    assert shifted == server.score({**ROW, "amount": 135.0})  # the model saw the shifted value

    down = start(env={"MODEL_FEATURE_SHIFT": "amount=-2,balance=0.5"})
    assert down.call("GET", "/admin/faults")[1]["featureShift"] == {"amount": -2, "balance": 0.5}
    down.score(ROW)  # amount 95 - 80 = 15, balance 1000 + 200
    scrape = down.scrape()
    assert scrape.bins("model_feature_value", feature="amount")[0] == 1
    assert scrape.bins("model_feature_value", feature="balance")[6] == 1  # (1101.3, 1209.8]


def test_bad_input_answers_400(start: Start) -> None:
    server = start()
    nan_row = json.dumps({"features": ROW}).replace("95.0", "NaN").encode()
    cases: dict[str, Any] = {
        "body is not JSON": b"{not json",
        'expected {"features"': [ROW],
        "missing feature(s) tenure, balance": {"features": {"amount": 1.0, "age": 2.0}},
        "age must be a finite number, got 'old'": {"features": {**ROW, "age": "old"}},
        "age must be a finite number, got True": {"features": {**ROW, "age": True}},
        "amount must be a finite number, got nan": nan_row,
        "country must be a string": {"features": {**ROW, "country": 3}},
        "instances must be a list of 1": {"instances": []},
        "instances[1]: missing feature(s) amount": {"instances": [ROW, {"age": 1}]},
        "or {": {"features": ROW, "instances": [ROW]},
    }
    for message, body in cases.items():
        status, answer = server.call("POST", "/predict", body)
        assert status == 400, (message, answer)
        assert message in answer["error"]
    assert server.call("POST", "/nowhere", {})[0] == 404

    scrape = server.scrape()
    assert scrape.value("model_requests_total", code="400") == len(cases)
    assert scrape.value("model_requests_total", code="200") == 0
    assert scrape.value("model_feature_value_count", feature="amount") == 0


def test_sigterm_exits_zero_promptly_even_mid_request(start: Start) -> None:
    server = start("--added-latency", "5")
    outcome: list[object] = []
    slow = threading.Thread(target=lambda: outcome.append(_try(server.predict, ROW)))
    slow.start()
    time.sleep(0.3)  # the request is now sleeping in the server
    began = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.popen is not None
    assert server.proc.popen.wait(5) == 0
    assert time.monotonic() - began < 2
    slow.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], OSError)  # cut off, not answered
    log = server.proc.tail()
    assert "v1 listening on 127.0.0.1" in log
    assert log.rstrip().endswith("modelserver: stopped")


def _try(call: Callable[..., object], *args: object) -> object:
    try:
        return call(*args)
    except OSError as error:
        return error
