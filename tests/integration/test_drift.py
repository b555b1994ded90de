"""The PSI drift gate against a real Prometheus scraping exporter processes that
emit per-feature histograms on a reference's edges, with the operator running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.stats import norm

from modelrollout.reference import Distribution, Reference, config_map, parse_reference
from testbed import Prometheus, free_port, procs
from testbed.prometheus import values

from . import objects
from .conftest import Api, Obj, Operator, condition, phase, stage, story
from .scenario import Exporters, setup

INTERVAL = 5
FEATURES = ("amount", "age")


def normal_reference(*names: str, shift: dict[str, float] | None = None) -> Reference:
    """Decile edges of N(0, 1) (moved by `shift`), each bin holding 10%."""
    deciles = norm.ppf(np.linspace(0.1, 0.9, 9))
    return Reference(
        samples=100_000,
        features=tuple(
            Distribution(
                name=name,
                edges=tuple(float(e) + (shift or {}).get(name, 0.0) for e in deciles),
                proportions=(0.1,) * 10,
            )
            for name in names
        ),
    )


@pytest.fixture
def serve(
    api: Api, prometheus: Prometheus, spawn: Callable[..., procs.Proc], tmp_path: Path
) -> Callable[..., Exporters]:
    """Start exporters for the named deployments, instrumented with `reference`."""

    def start(
        reference: Reference, *deployments: str, feature_rps: float = 40.0, seed: int = 0
    ) -> Exporters:
        path = tmp_path / f"reference-{seed}.yaml"
        path.write_text(reference.to_yaml())
        ports = {name: free_port() for name in deployments}
        for offset, (name, port) in enumerate(ports.items()):
            argv = [
                sys.executable, "-m", "testbed.exporter", "--port", str(port),
                "--seed", str(1000 * seed + offset), "--reference", str(path),
                "--feature-rps", str(feature_rps),
            ]  # fmt: skip
            spawn(f"exporter-{name}", argv, env={"PYTHONPATH": "tests"})
        targets = prometheus_targets(api.namespace, ports)
        prometheus.set_targets(targets)
        expected = float(len(ports))
        prometheus.wait_for(
            f'count(up{{namespace="{api.namespace}"}} == 1)', lambda r: values(r) == [expected], 30
        )
        return Exporters(ports)

    return start


def prometheus_targets(namespace: str, ports: dict[str, int]) -> list[Obj]:
    return [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": namespace, "deployment": name}}
        for name, port in ports.items()
    ]


def drift_spec(prometheus: Prometheus, reference: Obj, **gate: Any) -> dict[str, Obj]:
    return {
        "analysis": {
            "interval": f"{INTERVAL}s",
            "prometheus": {"address": prometheus.url, "timeout": "3s"},
        },
        "driftGate": {
            "histogram": "model_feature_value",
            "features": list(FEATURES),
            "reference": reference,
            "minSamples": 100,
            **gate,
        },
    }


CONFIG_MAP = {"configMapRef": {"name": "training"}}
STAGES = [{"weight": 10, "duration": "10s"}, {"weight": 50, "duration": "10s"}]
STAGES.append({"weight": 100, "duration": "2s"})


def drift_of(obj: Obj) -> Obj:
    drift: Obj = (obj.get("status") or {}).get("drift") or {}
    return drift


def test_the_same_distribution_passes_every_stage_side_by_side(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    spec = drift_spec(prometheus, {"stable": {}})
    setup(api, "gatewayAPI", {"stages": STAGES}, **spec)
    judged = api.wait_rollout(
        "model", lambda o: drift_of(o).get("verdict") == "stable", "a stable drift verdict", 60
    )
    drift = drift_of(judged)
    # two small samples: PSI is noisy, and the critical value says how noisy
    assert 0 <= drift["aggregate"] <= max(drift["criticalValue"], 0.1)
    assert [f["feature"] for f in drift["features"]] == list(FEATURES)
    for feature in drift["features"]:
        # one feature may warn by chance (at most 1 - confidence of the time); none drifts
        assert feature["verdict"] in ("stable", "warn")
        assert feature["candidateSamples"] >= 100  # minSamples
        assert feature["referenceSamples"] > 0  # the stable's count is not gated
        assert feature["criticalValue"] > 0
    done = api.wait_phase("model", "Succeeded", timeout=90)
    assert [h["reason"] for h in done["status"]["history"]][-1] == "Succeeded"
    assert drift_of(done)["stage"] == 2  # not re-checked at 100%: the stable serves nothing
    header, row = api.control_plane.kubectl("get", "mro", "model", "-n", api.namespace).splitlines()
    column = dict(zip(header.split(), row.split(), strict=True))
    assert float(column["DRIFT"]) == pytest.approx(drift_of(done)["aggregate"])


def shift_the_candidate(api: Api, serve: Callable[..., Exporters]) -> None:
    """Both models' exporters on the training reference (applied as its ConfigMap), the
    candidate's `amount` one sigma up."""
    reference = normal_reference(*FEATURES)
    servers = serve(reference, "model-v1", "model-v2")
    servers.configure("model-v2", features={"amount": {"mean": 1.0}})
    api.apply(config_map("training", reference))


def test_a_one_sigma_shift_on_one_feature_rolls_back_naming_it(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    shift_the_candidate(api, serve)
    read = setup(api, "gatewayAPI", {"stages": STAGES}, **drift_spec(prometheus, CONFIG_MAP))
    rolled_back = api.wait_phase("model", "RolledBack", timeout=60)
    assert read() == (100, 0, False)
    entry = rolled_back["status"]["history"][-2]
    assert entry["reason"] == "DriftDetected"
    assert "features: amount " in entry["message"]
    assert "age" not in entry["message"].split("features:")[1]
    drift = drift_of(rolled_back)
    assert drift["verdict"] == "drift"
    by_name = {f["feature"]: f for f in drift["features"]}
    assert by_name["amount"]["verdict"] == "drift"
    assert by_name["amount"]["psi"] > 0.25
    assert by_name["age"]["verdict"] == "stable"
    api.wait_events(
        "model",
        lambda e: e["reason"] == "DriftDetected" and "features: amount" in e["message"],
        "DriftDetected naming amount",
    )


def test_observe_only_warns_and_still_promotes(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    shift_the_candidate(api, serve)
    spec = drift_spec(prometheus, CONFIG_MAP, enforce=False)
    setup(api, "gatewayAPI", {"stages": STAGES}, **spec)
    done = api.wait_phase("model", "Succeeded", "RolledBack", timeout=90)
    assert phase(done) == "Succeeded", story(done)
    assert drift_of(done)["verdict"] == "drift"
    assert drift_of(done)["enforced"] is False
    warned = condition(done, "Drift")
    assert warned is not None
    assert (warned["status"], warned["reason"]) == ("True", "DriftDetected")
    [event, *_] = api.wait_events(
        "model", lambda e: e["reason"] == "DriftDetected", "an observe-only DriftDetected"
    )
    assert event["type"] == "Warning"
    assert event["message"].startswith("observe-only, not blocking: drift:")


def test_a_feature_without_series_holds_naming_it(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    api.apply(config_map("training", normal_reference(*FEATURES, "tenure")))
    spec = drift_spec(prometheus, CONFIG_MAP)
    spec["driftGate"]["features"] = [*FEATURES, "tenure"]
    read = setup(api, "gatewayAPI", {"stages": STAGES}, **spec)
    held = api.wait_rollout(
        "model", lambda o: drift_of(o).get("verdict") == "nodata", "a nodata verdict", 60
    )
    missing = condition(held, "Drift")
    assert missing is not None
    assert (missing["status"], missing["reason"]) == ("True", "DriftNoData")
    assert "no tenure histogram series" in missing["message"]
    api.wait_rollout(
        "model",
        lambda o: drift_of(o).get("checkedAt") != drift_of(held)["checkedAt"],
        "a second check",
        20,
    )
    still = api.rollout("model")
    assert (phase(still), stage(still)) == ("Progressing", 1)
    assert read() == (90, 10, False)
    assert "no tenure histogram series" in still["status"]["message"]


def test_bucket_edges_that_differ_fail_naming_the_feature(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    api.apply(config_map("training", normal_reference(*FEATURES, shift={"age": 0.5})))
    read = setup(api, "gatewayAPI", {"stages": STAGES}, **drift_spec(prometheus, CONFIG_MAP))
    failed = api.wait_phase("model", "Failed", timeout=60)
    assert failed["status"]["history"][-1]["reason"] == "DriftBinsMismatch"
    assert "feature age: bucket edges differ" in failed["status"]["message"]
    assert "amount" not in failed["status"]["message"]
    assert read() == (90, 10, False)  # the weight was left as it was


def test_a_malformed_reference_fails_before_traffic_with_the_key_and_problem(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    broken = config_map("training", normal_reference(*FEATURES))
    text = yaml.safe_load(broken["data"]["reference.yaml"])
    text["features"][1]["proportions"][0] = 0.5
    broken["data"]["reference.yaml"] = yaml.safe_dump(text)
    api.apply(broken)
    read = setup(api, "gatewayAPI", {"stages": STAGES}, **drift_spec(prometheus, CONFIG_MAP))
    failed = api.wait_phase("model", "Failed", timeout=30)
    message = failed["status"]["message"]
    assert "training/reference.yaml" in message
    assert "features.1" in message
    assert "proportions sum to 1.4" in message
    assert stage(failed) == 0
    assert read() == (100, 0, False)


def test_a_missing_reference_config_map_is_named_and_picked_up_once_created(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    read = setup(api, "gatewayAPI", {"stages": STAGES}, **drift_spec(prometheus, CONFIG_MAP))
    waiting = api.wait_phase("model", "Failed", timeout=30)
    assert "ConfigMap training not found" in waiting["status"]["message"]
    assert read() == (100, 0, False)
    api.apply(config_map("training", normal_reference(*FEATURES)))
    api.wait_rollout("model", lambda o: stage(o) >= 1, "stage 1 once the reference exists", 40)


SEEDS = 20


def test_no_drift_at_a_one_percent_stage_never_rolls_back_across_20_seeds(
    api: Api, operator: Operator, prometheus: Prometheus, spawn: Callable[..., procs.Proc],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Twenty candidates drawn from the reference itself, each judged several times
    at 1% from 200 samples on, with the default thresholds."""
    reference = normal_reference(*FEATURES)
    path = tmp_path / "reference.yaml"
    path.write_text(reference.to_yaml())
    api.apply(config_map("training", reference))
    ports = {f"cand-{seed}": free_port() for seed in range(SEEDS)}
    for seed, (name, port) in enumerate(ports.items()):
        argv = [
            sys.executable, "-m", "testbed.exporter", "--port", str(port), "--seed",
            str(seed), "--reference", str(path), "--feature-rps", "15",
        ]  # fmt: skip
        spawn(f"exporter-{name}", argv, env={"PYTHONPATH": "tests"})
    prometheus.set_targets(prometheus_targets(api.namespace, ports))
    prometheus.wait_for(
        f'count(up{{namespace="{api.namespace}"}} == 1)', lambda r: values(r) == [SEEDS], 60
    )
    stages = [{"weight": 1, "duration": "25s"}, {"weight": 100, "duration": "1s"}]
    spec = drift_spec(prometheus, CONFIG_MAP, minSamples=200)
    for seed in range(SEEDS):
        stable, candidate = f"base-{seed}", f"cand-{seed}"
        route = objects.http_route(f"route-{seed}", stable, candidate)
        rollout = objects.rollout(
            f"seed-{seed}",
            stable,
            candidate,
            {"gatewayAPI": {"httpRoute": f"route-{seed}"}},
            strategy={"stages": stages},
            **spec,
        )
        rollout["spec"]["stable"]["service"] = stable
        rollout["spec"]["candidate"]["service"] = candidate
        api.apply(
            *objects.targets(stable, candidate),
            route,
            rollout,
        )
    outcomes = {}
    for seed in range(SEEDS):
        done = api.wait_phase(f"seed-{seed}", "Succeeded", "RolledBack", "Failed", timeout=180)
        outcomes[seed] = done
    rolled_back = {
        s: o["status"]["message"] for s, o in outcomes.items() if phase(o) != "Succeeded"
    }
    assert rolled_back == {}
    for done in outcomes.values():  # stage 1 passed the gate: it holds until it can judge
        first = next(h for h in done["status"]["history"] if h["reason"] == "StageComplete")
        assert first["stage"] == 2


def _cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "modelrollout.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_cli_and_the_operator_agree_on_the_same_values(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Build a reference from a CSV, compute a shifted CSV's PSI offline, feed the
    same values to a server instrumented with the reference's edges, and read the
    PSI the operator computed from Prometheus."""
    rng = np.random.default_rng(3)
    train, shifted = tmp_path / "train.csv", tmp_path / "shifted.csv"
    np.savetxt(train, rng.normal(0, 1, (5_000, 2)), delimiter=",", header="amount,age", comments="")
    today = np.column_stack([rng.normal(0.4, 1.2, 1_500), rng.normal(0, 1, 1_500)])
    np.savetxt(shifted, today, delimiter=",", header="amount,age", comments="", fmt="%.17g")
    manifest = tmp_path / "reference.yaml"
    _cli("reference", "build", str(train), "--features", "amount,age", "--bins", "10",
         "--name", "training", "-o", str(manifest))  # fmt: skip
    offline = json.loads(_cli("psi", "--reference", str(manifest), str(shifted), "--json"))
    expected = {f["feature"]: f["psi"] for f in offline["features"]}

    config = yaml.safe_load(manifest.read_text())
    servers = serve(parse_reference(config["data"]["reference.yaml"]), "model-v1", "model-v2",
                    feature_rps=0.0)  # fmt: skip
    api.apply(config)
    stages = [{"weight": 10, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    spec = drift_spec(prometheus, CONFIG_MAP, enforce=False)
    setup(api, "gatewayAPI", {"stages": stages}, **spec)
    api.wait_rollout("model", lambda o: stage(o) == 1, "stage 1", 60)
    time.sleep(2.5)  # a scrape of the zero counts inside the stage's window
    servers.configure("model-v2", feed={"amount": list(today[:, 0]), "age": list(today[:, 1])})
    judged = api.wait_rollout(
        "model",
        lambda o: all(f.get("psi") is not None for f in drift_of(o).get("features", [{}])),
        "a drift check of the fed values",
        60,
    )
    online = {f["feature"]: f["psi"] for f in drift_of(judged)["features"]}
    assert online.keys() == expected.keys() == {"amount", "age"}
    for feature, value in expected.items():
        assert online[feature] == pytest.approx(value, abs=1e-9), feature
    assert expected["amount"] > 0.05  # the shift is visible, not two zeros agreeing


def test_a_shift_against_the_stables_live_traffic_rolls_back_naming_it(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    servers = serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    servers.configure("model-v2", features={"amount": {"mean": 1.0}})
    read = setup(api, "gatewayAPI", {"stages": STAGES}, **drift_spec(prometheus, {"stable": {}}))
    rolled_back = api.wait_phase("model", "RolledBack", "Succeeded", timeout=90)
    assert phase(rolled_back) == "RolledBack", story(rolled_back)
    assert read() == (100, 0, False)
    entry = rolled_back["status"]["history"][-2]
    assert entry["reason"] == "DriftDetected"
    assert "amount" in entry["message"]
    by_name = {f["feature"]: f for f in drift_of(rolled_back)["features"]}
    assert by_name["amount"]["verdict"] == "drift"
    assert by_name["age"]["verdict"] in ("stable", "warn")
    assert by_name["amount"]["referenceSamples"] > 0  # the stable's own count in the window


DEPLOYED = ("model-v1", "model-v2")


def kube_reads(operator: Operator) -> dict[str, float]:
    """The operator's `modelrollout_kube_reads_total` by kind."""
    found = re.findall(r'^modelrollout_kube_reads_total\{kind="(\w+)"\} (\S+)$',
                       operator.metrics(), re.MULTILINE)  # fmt: skip
    return {kind: float(value) for kind, value in found}


def test_passes_read_their_deployments_and_reference_from_the_watch_until_they_change(
    api: Api, operator: Operator, prometheus: Prometheus, serve: Callable[..., Exporters]
) -> None:
    """At rest a pass reads nothing but Prometheus; a change to the reference by
    someone else is read at the next pass all the same."""
    serve(normal_reference(*FEATURES), "model-v1", "model-v2")
    api.apply(config_map("training", normal_reference(*FEATURES)))
    stages = [{"weight": 10, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    read = setup(api, "gatewayAPI", {"stages": stages}, **drift_spec(prometheus, CONFIG_MAP))
    judged = api.wait_rollout(
        "model", lambda o: stage(o) == 1 and drift_of(o).get("checkedAt"), "a drift check", 60
    )
    versions = {d: api.get("deployment", d)["metadata"]["resourceVersion"] for d in DEPLOYED}
    before, checks = kube_reads(operator), 0
    last = drift_of(judged)["checkedAt"]
    while checks < 3:  # three more passes, each with its analysis and drift gate
        judged = api.wait_rollout(
            "model", lambda o, seen=last: drift_of(o).get("checkedAt") != seen, "a check", 30
        )
        last, checks = drift_of(judged)["checkedAt"], checks + 1
    after = kube_reads(operator)
    # nothing changed them meanwhile (else one read each would be right)
    assert versions == {
        d: api.get("deployment", d)["metadata"]["resourceVersion"] for d in DEPLOYED
    }
    assert {k: after[k] - before.get(k, 0) for k in ("Deployment", "ConfigMap")} == {
        "Deployment": 0,
        "ConfigMap": 0,
    }, story(judged)
    assert (phase(judged), read()) == ("Progressing", (90, 10, False))
    api.apply(config_map("training", normal_reference(*FEATURES, shift={"age": 0.5})))
    failed = api.wait_phase("model", "Failed", timeout=30)
    assert failed["status"]["history"][-1]["reason"] == "DriftBinsMismatch", story(failed)
    assert kube_reads(operator)["ConfigMap"] > after["ConfigMap"]
