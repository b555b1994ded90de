"""`kubectl modelrollout` against the real API server: rollouts are created with the
admin client and their status written through the status subresource, as the operator
would (no operator runs, so nothing consumes an action annotation the plugin writes).
`lint` is offline and needs no server."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import numpy as np
import pytest
import yaml
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from invalid_rollouts import CASES, InvalidCase, valid_rollout
from modelrollout.plugin import main as plugin_main
from modelrollout.plugin import timeline
from modelrollout.plugin.main import main
from testbed import ControlPlane
from testbed.paths import ROOT

from .conftest import ACTION, GROUP, PLURAL, VERSION, Api, Obj

NOW = datetime.now(UTC)


@dataclass
class Result:
    code: int
    out: str
    err: str


Plugin = Callable[..., Result]


@pytest.fixture
def now() -> datetime:
    """The test's one reading of the clock: what it creates and what it expects both
    come from it, so a second ticking over between them cannot fail the test. Whole
    seconds, as status timestamps are: a fraction would shift every span the plugin
    derives from them by up to a second."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def plugin(
    control_plane: ControlPlane,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Plugin:
    """`kubectl modelrollout --kubeconfig K -n NS ARGS...` in-process: exit code, stdout, stderr."""
    monkeypatch.delenv("COLUMNS", raising=False)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        connection = ["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace]
        code = main([*connection, *argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def spec(**overrides: Any) -> Obj:
    query = 'sum(rate(x{deployment="{{candidate.deployment}}"}[1m]))'
    return {
        "stable": {"deployment": "model-v1"},
        "candidate": {"deployment": "model-v2"},
        "trafficRouting": {"replicas": {"totalReplicas": 10}},
        "strategy": {"preset": "1-5-25-100", "stageDuration": "5m", "minSamples": 1000},
        "analysis": {
            "interval": "30s",
            "prometheus": {"address": "http://prometheus.monitoring:9090"},
            "samplesQuery": query,
            "metrics": [
                {
                    "name": "error-rate",
                    "query": query,
                    "slo": {"max": 0.01},
                    "abort": {"max": 0.05},
                },
                {
                    "name": "latency-p99",
                    "query": query,
                    "slo": {"max": 0.25},
                    "abort": {"max": 0.5},
                },
            ],
        },
        "driftGate": {
            "histogram": "model_feature_value",
            "features": ["age", "income"],
            "reference": {"stable": {}},
            "warn": 0.1,
            "max": 0.25,
        },
        **overrides,
    }


def condition(type: str, status: bool, reason: str) -> Obj:
    value = "True" if status else "False"
    return {"type": type, "status": value, "reason": reason, "lastTransitionTime": ts(NOW)}


def progressing(now: datetime) -> Obj:
    """Stage 2 of 4 at 5%, begun a minute before `now`, one metric failing, drift stable."""
    checked = ts(now - timedelta(seconds=10))
    return {
        "phase": "Progressing",
        "stage": 2,
        "stageCount": 4,
        "weight": 5,
        "effectiveWeight": 10.0,
        "stageStartedAt": ts(now - timedelta(seconds=60)),
        "observedGeneration": 1,
        "rolloutGeneration": 1,
        "stageSummary": "2/4",
        "weightSummary": "5%",
        "message": "stage 2 of 4 at 5%: 4m0s of 5m left; 120 of 1000 samples",
        "conditions": [
            condition("Ready", False, "Progressing"),
            condition("Reconciling", True, "StageInProgress"),
            condition("Stalled", False, "Progressing"),
        ],
        "analysis": [
            {
                "name": "error-rate",
                "value": 0.004,
                "slo": {"max": 0.01},
                "abort": {"max": 0.05},
                "verdict": "pass",
                "stage": 2,
                "checkedAt": checked,
            },
            {
                "name": "latency-p99",
                "value": 0.31,
                "slo": {"max": 0.25},
                "abort": {"max": 0.5},
                "verdict": "fail",
                "consecutiveFailures": 2,
                "stage": 2,
                "checkedAt": checked,
                "message": "latency-p99 0.31 above the slo max 0.25",
            },
        ],
        "samples": {"count": 120, "required": 1000, "ratePerSecond": 2.0, "etaSeconds": 440},
        "drift": {
            "aggregate": 0.031,
            "criticalValue": 0.05,
            "enforced": True,
            "stage": 2,
            "looks": 3,
            "verdict": "stable",
            "checkedAt": checked,
            "features": [
                {
                    "feature": "age",
                    "psi": 0.02,
                    "criticalValue": 0.061,
                    "candidateSamples": 480,
                    "referenceSamples": 9600,
                    "verdict": "stable",
                },
                {
                    "feature": "income",
                    "psi": 0.042,
                    "criticalValue": 0.059,
                    "candidateSamples": 480,
                    "referenceSamples": 9600,
                    "verdict": "stable",
                },
            ],
        },
        "history": [
            {
                "time": ts(now - timedelta(minutes=6)),
                "from": "Pending",
                "to": "Progressing",
                "stage": 1,
                "weight": 1,
                "reason": "Started",
                "message": "stage 1 of 4 at 1%",
            },
            {
                "time": ts(now - timedelta(seconds=60)),
                "from": "Progressing",
                "to": "Progressing",
                "stage": 2,
                "weight": 5,
                "reason": "StageComplete",
                "message": "stage 1 passed after 5m; stage 2 of 4 at 5%",
            },
        ],
    }


def create(
    api: Api,
    name: str = "model",
    status: Obj | None = None,
    annotations: dict[str, str] | None = None,
    **spec_overrides: Any,
) -> Obj:
    """A rollout as the operator would have left it: created, then its status written."""
    custom = kubernetes.client.CustomObjectsApi(api.client)
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec(**spec_overrides),
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, api.namespace, PLURAL, manifest)
    if status is not None:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, api.namespace, PLURAL, name, {"status": status}
        )
    return api.rollout(name)


def write_status(api: Api, name: str, status: Obj) -> None:
    kubernetes.client.CustomObjectsApi(api.client).patch_namespaced_custom_object_status(
        GROUP, VERSION, api.namespace, PLURAL, name, {"status": status}
    )


def event(api: Api, obj: Obj, reason: str, message: str, **extra: Any) -> None:
    """An Event about `obj`, as kopf posts them."""
    meta = obj["metadata"]
    stamp = ts(datetime.now(UTC))
    body: Obj = {
        "metadata": {"generateName": f"{meta['name']}."},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelRollout",
            "name": meta["name"],
            "namespace": api.namespace,
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message,
        "type": "Normal",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": "modelrollout-operator"},
    }
    for key, value in extra.items():
        if key == "involvedObject":
            body["involvedObject"].update(value)
        else:
            body[key] = value
    kubernetes.client.CoreV1Api(api.client).create_namespaced_event(api.namespace, body)  # type: ignore[arg-type]


def cells(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first` (boxed or plain tables)."""
    for line in out.splitlines():
        parts = [p.strip() for p in re.split(r"│|\s{2,}", line) if p.strip()]
        if parts and parts[0] == first:
            return parts
    raise AssertionError(f"no row {first!r} in:\n{out}")


# -- get ---------------------------------------------------------------------------------


def test_get_lists_phase_stage_weight_drift_and_age(
    api: Api, plugin: Plugin, now: datetime
) -> None:
    create(api, "model", progressing(now))
    create(api, "fresh")
    result = plugin("get")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "STAGE", "WEIGHT", "DRIFT", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == ["fresh", "model"]
    model = cells(result.out, "model")
    assert model[:5] == ["model", "Progressing", "2/4", "5% (10% effective)", "0.031 stable"]
    assert re.fullmatch(r"\d+s", model[5]), model
    assert cells(result.out, "fresh")[:5] == ["fresh", "Pending", "0/0", "0%", "-"]

    one = plugin("get", "model")
    assert one.code == 0
    assert [line.split()[0] for line in one.out.splitlines()] == ["NAME", "model"]


def test_get_in_all_namespaces_adds_the_namespace_column(
    api: Api, plugin: Plugin, namespace: str, now: datetime
) -> None:
    create(api, "model", progressing(now))
    result = plugin("get", "-A")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert cells(result.out, namespace)[:3] == [namespace, "model", "Progressing"]


def test_get_of_a_missing_rollout_fails_and_an_empty_namespace_says_so(plugin: Plugin) -> None:
    missing = plugin("get", "ghost")
    assert missing.code == 1
    assert "modelrollout 'ghost' not found" in missing.err
    empty = plugin("get")
    assert (empty.code, empty.out) == (0, "")
    assert "No modelrollouts found in namespace test-" in empty.err


# -- status ------------------------------------------------------------------------------


def test_status_shows_stages_weight_checks_drift_dwell_and_events(
    api: Api, plugin: Plugin, namespace: str, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin_main, "_now", lambda: now + timedelta(seconds=3))
    obj = create(api, "model", progressing(now))
    event(api, obj, "Started", "stage 1 of 4 at 1%")
    event(api, obj, "AnalysisFailed", "latency-p99 0.31 above the slo max 0.25", type="Warning")
    event(api, obj, "OtherRollout", "not about model", involvedObject={"name": "other"})
    event(api, obj, "EarlierRollout", "same name, older uid", involvedObject={"uid": "0000"})

    result = plugin("status", "model")
    assert result.code == 0, result.err
    out = result.out
    assert f"{namespace}/model  Progressing  stage 2/4" in out
    assert "stage 2 of 4 at 5%: 4m0s of 5m left; 120 of 1000 samples" in out
    assert "stages  ✓ 1% → ▶ 5% →   25% →   100%" in out
    assert "weight  5% declared, 10% effective" in out
    assert "began 1m03s ago; 3m57s left of its 5m" in out  # the plugin's clock: now + 3s
    assert "samples 120 of 1000 at 2/s, about 7m20s to go" in out
    assert "dwell   can complete in about 7m20s" in out
    assert "conditions  Ready=False Reconciling=True Stalled=False" in out

    assert cells(out, "error-rate")[:6] == [
        "error-rate",
        "0.004",
        "<= 0.01",
        "<= 0.05",
        "pass",
        "0",
    ]
    latency = cells(out, "latency-p99")
    assert latency[:6] == ["latency-p99", "0.31", "<= 0.25", "<= 0.5", "fail", "2"]
    assert latency[7] == "latency-p99 0.31 above the slo max 0.25"

    assert (
        "drift   stable: aggregate 0.031 (critical 0.05), warn 0.1 max 0.25, enforced, "
        "3 looks at stage 2" in out
    )
    assert cells(out, "age") == ["age", "0.02", "0.061", "480", "9600", "stable"]
    assert cells(out, "income") == ["income", "0.042", "0.059", "480", "9600", "stable"]

    events = out[out.index("events") :]
    started = next(line for line in events.splitlines() if "Started" in line)
    assert re.split(r"│|\s{2,}", started.strip("│ "))[1:] == [
        "Normal",
        "Started",
        "stage 1 of 4 at 1%",
    ] or [c.strip() for c in started.split("│") if c.strip()][1:] == [
        "Normal",
        "Started",
        "stage 1 of 4 at 1%",
    ]
    warning = next(line for line in events.splitlines() if "AnalysisFailed" in line)
    assert [c.strip() for c in warning.split("│") if c.strip()][1:] == [
        "Warning",
        "AnalysisFailed",
        "latency-p99 0.31 above the slo max 0.25",
    ]
    assert "OtherRollout" not in out
    assert "EarlierRollout" not in out


def test_status_of_a_rollout_the_operator_has_not_seen_says_so(api: Api, plugin: Plugin) -> None:
    create(api, "fresh")
    result = plugin("status", "fresh")
    assert result.code == 0, result.err
    assert "Pending  stage 0/0" in result.out
    assert "stages    1% →   5% →   25% →   100%" in result.out
    assert "conditions  none yet (generation 1 not yet seen by the operator)" in result.out
    assert "analysis" not in result.out


def test_status_watch_returns_once_the_rollout_ends(
    api: Api, plugin: Plugin, now: datetime
) -> None:
    create(api, "model", progressing(now))
    succeeded = progressing(now) | {
        "phase": "Succeeded",
        "stage": 4,
        "weight": 100,
        "message": "promoted: 100% on the candidate",
        "conditions": [
            condition("Ready", True, "Succeeded"),
            condition("Reconciling", False, "Succeeded"),
            condition("Stalled", False, "Succeeded"),
        ],
    }
    timer = threading.Timer(1.5, write_status, (api, "model", succeeded))
    timer.start()
    started = time.monotonic()
    result = plugin("status", "model", "--watch", "--interval", "0.2", "--timeout", "30")
    elapsed = time.monotonic() - started
    timer.join()
    assert result.code == 0, result.err
    assert 1.4 <= elapsed < 10
    assert "Succeeded  stage 4/4" in result.out
    assert "✓ 1% → ✓ 5% → ✓ 25% → ✓ 100%" in result.out
    assert "began" not in result.out  # an ended rollout has no time left

    stopped = time.monotonic()
    again = plugin("status", "model", "--watch", "--timeout", "30")
    assert again.code == 0
    assert time.monotonic() - stopped < 5  # already ended: no waiting


def test_status_of_a_missing_rollout_fails(plugin: Plugin) -> None:
    result = plugin("status", "ghost")
    assert result.code == 1
    assert re.fullmatch(
        r"error: modelrollout 'ghost' not found in namespace test-\w+\n", result.err
    )
    assert result.out == ""


# -- actions -----------------------------------------------------------------------------


def state(phase: str, manual_pause: bool = False) -> Obj:
    return {
        "phase": phase,
        "stage": 2,
        "stageCount": 4,
        "weight": 5,
        "manualPause": manual_pause,
        "observedGeneration": 1,
    }


@pytest.mark.parametrize(
    ("argv", "phase", "manual_pause", "written"),
    [
        (["promote"], "Paused", False, "promote"),
        (["promote"], "Progressing", False, "promote"),
        (["promote", "--full"], "Progressing", False, "promote-full"),
        (["abort"], "Progressing", False, "abort"),
        (["abort"], "Pending", False, "abort"),
        (["retry"], "RolledBack", False, "retry"),
        (["retry"], "Failed", False, "retry"),
        (["pause"], "Progressing", False, "pause"),
        (["resume"], "Paused", True, "resume"),
    ],
)
def test_an_action_writes_its_annotation(
    api: Api, plugin: Plugin, argv: list[str], phase: str, manual_pause: bool, written: str
) -> None:
    before = create(api, "model", state(phase, manual_pause))
    result = plugin(*argv, "model")
    assert result.code == 0, result.err
    assert f"modelrollout.rollouts.mlops.io/model annotated: {written} (was {phase})" in result.out
    after = api.rollout("model")
    assert after["metadata"]["annotations"] == {ACTION: written}
    assert after["spec"] == before["spec"]
    assert after["status"] == before["status"]


@pytest.mark.parametrize(
    ("argv", "phase", "manual_pause", "spec_paused", "why"),
    [
        (["promote"], "Succeeded", False, False, "the rollout has ended (Succeeded)"),
        (["promote", "--full"], "RolledBack", False, False, "ended (RolledBack); retry starts"),
        (["promote"], "RollingBack", False, False, "the rollout is rolling back"),
        (["pause"], "Failed", False, False, "the rollout has ended (Failed)"),
        (["pause"], "Paused", True, False, "already paused by the pause action"),
        (["abort"], "Succeeded", False, False, "the rollout has ended (Succeeded)"),
        (["abort"], "RolledBack", False, False, "the rollout has ended (RolledBack)"),
        (["retry"], "Progressing", False, False, "retry starts a stopped rollout again"),
        (["retry"], "Succeeded", False, False, "this one is Succeeded"),
        (
            ["resume"],
            "Progressing",
            False,
            False,
            "resume ends a pause; this rollout is Progressing",
        ),
        (["resume"], "Paused", False, False, "paused by the operator, not by the pause action"),
        (["resume"], "Paused", True, True, "paused by spec.paused"),
        (["promote"], "Paused", False, True, "paused by spec.paused, which holds it whatever"),
    ],
)
def test_an_action_that_would_do_nothing_is_refused_and_writes_nothing(
    api: Api,
    plugin: Plugin,
    argv: list[str],
    phase: str,
    manual_pause: bool,
    spec_paused: bool,
    why: str,
) -> None:
    before = create(api, "model", state(phase, manual_pause), paused=spec_paused)
    result = plugin(*argv, "model")
    assert result.code == 1
    assert result.out == ""
    action = "promote-full" if "--full" in argv else argv[0]
    assert result.err.startswith(f"error: {action} refused for modelrollout model: ")
    assert why in result.err
    after = api.rollout("model")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert ACTION not in (after["metadata"].get("annotations") or {})


@pytest.mark.parametrize("argv", [["promote"], ["promote", "--full"], ["abort"], ["retry"],
                                  ["pause"], ["resume"]])  # fmt: skip
def test_an_action_on_a_missing_rollout_fails_and_creates_nothing(
    api: Api, plugin: Plugin, argv: list[str]
) -> None:
    result = plugin(*argv, "ghost")
    assert result.code == 1
    assert "modelrollout 'ghost' not found in namespace" in result.err
    listed = api.control_plane.kubectl("get", "mro", "-n", api.namespace, "-o", "name")
    assert listed == ""


def test_an_action_replacing_one_not_yet_taken_says_so(api: Api, plugin: Plugin) -> None:
    create(api, "model", state("Progressing"), annotations={ACTION: "pause", "team": "ranking"})
    result = plugin("abort", "model")
    assert result.code == 0, result.err
    assert "replaced the pending action 'pause'" in result.out
    annotations = api.rollout("model")["metadata"]["annotations"]
    assert annotations == {ACTION: "abort", "team": "ranking"}


# -- history and timeline ------------------------------------------------------------------


def test_history_lists_the_transitions_oldest_first(
    api: Api, plugin: Plugin, now: datetime
) -> None:
    create(api, "model", progressing(now))
    result = plugin("history", "model")
    assert result.code == 0, result.err
    history = progressing(now)["history"]
    first = cells(result.out, history[0]["time"])
    assert first == [history[0]["time"], "Pending → Progressing", "1", "1%", "Started",
                     "stage 1 of 4 at 1%"]  # fmt: skip
    second = cells(result.out, history[1]["time"])
    assert second[:5] == [history[1]["time"], "Progressing → Progressing", "2", "5%",
                          "StageComplete"]  # fmt: skip
    assert result.out.index(history[0]["time"]) < result.out.index(history[1]["time"])


def test_history_of_a_rollout_without_transitions_and_of_a_missing_one(
    api: Api, plugin: Plugin
) -> None:
    create(api, "fresh")
    empty = plugin("history", "fresh")
    assert (empty.code, empty.out) == (0, "")
    assert "modelrollout fresh has no transitions yet." in empty.err
    missing = plugin("history", "ghost")
    assert missing.code == 1
    assert "not found" in missing.err


def _pixels(image: np.ndarray[Any, Any], color: str) -> np.ndarray[Any, Any]:
    """Mask of the pixels drawn in `color` (anti-aliasing aside)."""
    mask: np.ndarray[Any, Any] = np.all(
        np.abs(image[..., :3] - np.array(to_rgb(color))) < 0.06, axis=-1
    )
    return mask


def test_timeline_draws_the_weight_and_each_checks_value(
    api: Api, plugin: Plugin, tmp_path: Path, now: datetime
) -> None:
    create(api, "model", progressing(now))
    path = tmp_path / "timeline.png"
    result = plugin("timeline", "model", "-o", str(path))
    assert result.code == 0, result.err
    assert f"wrote {path} (1000x900)" in result.out
    assert "latest check only" in result.out

    image = imread(path)
    assert image.shape[:2] == (900, 1000)  # 10in wide; 1in + 2in per panel, 4 panels
    weight_panel, checks = image[:230], image[230:]
    weight = _pixels(weight_panel, timeline.WEIGHT_COLOR)
    assert weight.sum() > 300, "the weight line is drawn in the top panel"
    _, columns = np.nonzero(weight)
    assert columns.max() - columns.min() > 500, "the weight spans most of the time axis"
    assert _pixels(image[230:], timeline.WEIGHT_COLOR).sum() < 50
    assert _pixels(checks, timeline.VALUE_COLOR).sum() > 3 * 100, "a point per metric and drift"
    assert _pixels(checks, timeline.SLO_COLOR).sum() > 500, "slo and warn lines"
    assert _pixels(checks, timeline.ABORT_COLOR).sum() > 500, "abort and max lines"
    inside = image[60:860, 100:950, :3]
    assert (inside < 0.9).any(axis=-1).mean() > 0.02, "the axes are not blank"


def test_timeline_of_a_rollout_without_history_or_checks(
    api: Api, plugin: Plugin, tmp_path: Path
) -> None:
    create(api, "fresh")
    time.sleep(3)  # the line runs from creation to now: let it be long enough to see
    path = tmp_path / "fresh.png"
    result = plugin("timeline", "fresh", "-o", str(path))
    assert result.code == 0, result.err
    image = imread(path)
    assert image.shape[:2] == (300, 1000)
    assert _pixels(image, timeline.WEIGHT_COLOR).sum() > 20, "a short line from creation to now"

    missing = plugin("timeline", "ghost", "-o", str(tmp_path / "ghost.png"))
    assert missing.code == 1
    assert not (tmp_path / "ghost.png").exists()


# -- connection ----------------------------------------------------------------------------


@pytest.fixture
def venv_path() -> str:
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def test_kubectl_runs_the_plugin_which_honours_KUBECONFIG(
    api: Api, control_plane: ControlPlane, venv_path: str, now: datetime
) -> None:
    create(api, "model", progressing(now))
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "PATH": venv_path}
    env.pop("COLUMNS", None)
    kubectl = str(control_plane.bin_dir / "kubectl")
    done = subprocess.run(
        [kubectl, "modelrollout", "get", "-n", api.namespace],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert cells(done.stdout, "model")[:3] == ["model", "Progressing", "2/4"]
    refused = subprocess.run(
        [kubectl, "modelrollout", "-n", api.namespace, "retry", "model"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "retry refused for modelrollout model" in refused.stderr


def test_the_namespace_comes_from_the_context_and_a_wrong_context_fails(
    api: Api,
    control_plane: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    now: datetime,
) -> None:
    create(api, "model", progressing(now))
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = api.namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    assert main(["--kubeconfig", str(kubeconfig), "get"]) == 0
    assert cells(capsys.readouterr().out, "model")[1] == "Progressing"

    assert main(["get", "--kubeconfig", str(kubeconfig), "--context", "nowhere"]) == 1
    assert "context 'nowhere' is not in the kubeconfig" in capsys.readouterr().err


# -- lint (offline) ------------------------------------------------------------------------

SAMPLES = ROOT / "manifests" / "samples"


def lint(capsys: pytest.CaptureFixture[str], *files: str) -> Result:
    capsys.readouterr()
    code = main(["lint", *files])
    out, err = capsys.readouterr()
    return Result(code, out, err)


def _broken() -> Obj:
    manifest = valid_rollout("ranker")
    s = manifest["spec"]
    s["candidate"]["deployment"] = s["stable"]["deployment"]
    s["trafficRouting"]["istio"] = {"virtualService": "model"}
    s["strategy"]["stages"][1]["mirror"] = True
    s["strategy"]["stages"][2]["duration"] = "1x"
    s["analysis"]["interval"] = "2s"
    s["analysis"]["metrics"][0]["abort"] = {"max": 0.001}
    s["driftGate"]["warn"] = 0.5
    s["driftGate"]["extraField"] = 1
    return manifest


BROKEN_PROBLEMS = [
    "spec.analysis.interval: interval must be at least 5s",
    "spec.analysis.metrics[0].abort: abort bounds must be no tighter than slo bounds "
    "(abort.max >= slo.max, abort.min <= slo.min)",
    "spec.candidate.deployment: stable and candidate must be different Deployments",
    "spec.driftGate.extraField: Extra inputs are not permitted (got 1)",
    "spec.driftGate.warn: warn must not exceed max",
    "spec.strategy.stages[1].weight: a mirror stage has weight 0; any other stage has a weight "
    "of 1 to 100",
    "spec.strategy.stages[2].duration: String should match pattern "
    "'^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$' (got '1x')",
    "spec.trafficRouting: trafficRouting needs exactly one of replicas, gatewayAPI or istio",
]


def test_lint_passes_the_samples(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in SAMPLES.glob("*.yaml"))
    result = lint(capsys, *files)
    assert (result.code, result.out) == (0, f"{len(files)} ModelRollouts valid\n")


def test_lint_reports_every_problem_with_its_field_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "release.yaml"
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ref"}}
    path.write_text(yaml.safe_dump_all([config_map, None, _broken(), valid_rollout("good")]))
    result = lint(capsys, str(path))
    assert result.code == 1
    expected = [f"{path}#1: skipped, not a ModelRollout (ConfigMap)"]
    expected += [f"{path}#3 ranker: {problem}" for problem in BROKEN_PROBLEMS]
    expected += ["8 problems (2 ModelRollouts checked)"]
    assert result.out.splitlines() == expected


def test_lint_reports_what_the_api_server_reports(
    control_plane: ControlPlane, namespace: str, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """One manifest breaking six CEL rules at once: lint names the same fields with the
    same messages as the API server, where pydantic alone would stop at the first
    broken model."""
    manifest = _broken()
    del manifest["spec"]["driftGate"]["extraField"]  # kubectl refuses it before the server
    manifest["spec"]["strategy"]["stages"][2]["duration"] = "1m"
    with pytest.raises(RuntimeError) as refused:
        control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                              input=yaml.safe_dump(manifest))  # fmt: skip
    server = set(re.findall(r'^\* (spec\S*): Invalid value: "object": (.*)$', str(refused.value),
                            re.MULTILINE))  # fmt: skip
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = lint(capsys, str(path))
    assert result.code == 1
    linted = {tuple(line.split(": ", 2)[1:]) for line in result.out.splitlines()[:-1]}
    assert len(server) == 6
    assert linted == server


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_lint_refuses_every_invalid_rollout(
    case: InvalidCase, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / f"{case.id}.yaml"
    path.write_text(yaml.safe_dump(case.manifest(case.id)))
    result = lint(capsys, str(path))
    assert result.code == 1
    assert (case.model_error or case.api_error) in result.out
    assert all(f"{path}#1 {case.id}: spec" in line for line in result.out.splitlines()[:-1])


def test_lint_reads_stdin_and_explains_unreadable_files(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = copy.deepcopy(valid_rollout("piped"))
    del manifest["metadata"]
    manifest["apiVersion"] = "rollouts.mlops.io/v1beta1"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(yaml.safe_dump(manifest)))
    piped = lint(capsys, "-")
    assert piped.code == 1
    assert piped.out.splitlines() == [
        "-#1 (no name): apiVersion: must be rollouts.mlops.io/v1alpha1, not "
        "'rollouts.mlops.io/v1beta1'",
        "-#1 (no name): metadata.name: required",
        "2 problems (1 ModelRollout checked)",
    ]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: [unclosed\n")
    unreadable = lint(capsys, str(bad_yaml), str(tmp_path / "absent.yaml"))
    assert unreadable.code == 1
    lines = unreadable.out.splitlines()
    assert lines[0].startswith(f"{bad_yaml}: cannot read: ")
    assert lines[1].startswith(f"{tmp_path / 'absent.yaml'}: cannot read: [Errno 2]")


def test_lint_skips_documents_that_are_not_rollouts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "list.yaml"
    items = {"apiVersion": "v1", "kind": "List", "items": [valid_rollout("a"), {"kind": "Service"}]}
    path.write_text(yaml.safe_dump(items))
    result = lint(capsys, str(path))
    assert result.code == 0
    assert result.out.splitlines() == [
        f"{path}#1.items[1]: skipped, not a ModelRollout (Service)",
        "1 ModelRollout valid",
    ]
