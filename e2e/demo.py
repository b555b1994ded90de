"""`make demo`: the whole loop on a local cluster, in one command.

It builds what is missing, starts a control plane (etcd, kube-apiserver,
controller-manager, scheduler, kwok), Prometheus, one model server per Ready pod,
the shadow comparator in front of the stable (modelrollout-shadow, docs/shadow.md),
the operator and a steady stream of traffic. Then two rollouts of a fraud model:
- v1 -> v2: first a shadow stage, where the comparator copies the stable's traffic to
  v2 and the operator judges how often v2 answers like v1 (the match rate), then
  5-10-25-50-100, judged on error rate, p99 latency and input drift; it promotes;
- the same stages without the shadow stage, but the candidate starts failing
  requests at stage 2, and the operator rolls it back on its own.
Each is shown live (`kubectl modelrollout status --watch`). A summary follows, with
the traffic share Prometheus saw at each stage, and everything started is stopped.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "operator")]

import yaml  # noqa: E402

from e2e.stack import (  # noqa: E402
    CANDIDATE,
    FAULTS,
    ROUTE,
    SHADOW,
    Stack,
    http_route,
    rollout,
    shadow_stage,
    stage_windows,
)
from modelrollout.plugin.main import main as plugin  # noqa: E402
from testbed import ControlPlane, Prometheus, procs  # noqa: E402
from testbed.paths import MissingPrerequisite  # noqa: E402

NAMESPACE = "demo"
STAGES = {"preset": "5-10-25-50-100", "stageDuration": "15s", "minSamples": 40}
WITH_SHADOW = {
    "stages": [
        shadow_stage(duration="15s", min_samples=400),
        *({"weight": w, "duration": "15s", "minSamples": 40} for w in (5, 10, 25, 50, 100)),
    ]
}


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    started = time.monotonic()
    say("building the control-plane binaries (minutes the first time, then cached)")
    subprocess.run(
        [str(ROOT / "hack" / "testbin" / "build.sh")], check=True, stdout=subprocess.DEVNULL
    )
    workdir = Path(tempfile.mkdtemp(prefix="modelrollout-demo-"))
    for folder in ("cluster", "prometheus"):
        (workdir / folder).mkdir()
    cp = ControlPlane(workdir=workdir / "cluster")
    prometheus: Prometheus | None = None
    stack: Stack | None = None
    results: list[dict[str, Any]] = []
    try:
        say("starting etcd, kube-apiserver, controller-manager, scheduler and kwok")
        cp.start()
        cp.install_gateway_and_istio_crds()
        cp.install_crds(ROOT / "crds")
        cp.kubectl("create", "namespace", NAMESPACE)
        say(
            "starting Prometheus, the model servers, the shadow comparator in front of the "
            "stable and the traffic (80 requests a second)"
        )
        prometheus = Prometheus(workdir / "prometheus").start()

        def apply(*manifests: dict[str, Any]) -> None:
            docs = "\n---\n".join(yaml.safe_dump(m) for m in manifests)
            cp.apply(docs + "\n", "-n", NAMESPACE, "--force-conflicts")

        stack = Stack(cp.api_client(), NAMESPACE, prometheus, apply, cp.kubeconfig)
        stack.start(shadow=True)
        say("starting the operator")
        procs.spawn(
            "operator",
            [sys.executable, "-m", "modelrollout", "--log-format", "plain",
             "--metrics-port", "0", "-n", NAMESPACE,
             "--allowed-addresses", "127.0.0.0/8"],  # Prometheus runs on loopback here
            env={"KUBECONFIG": str(cp.kubeconfig), "PYTHONPATH": str(ROOT / "operator")},
        )  # fmt: skip

        say("rollout 1: fraud-v1 -> fraud-v2, a healthy candidate, shadowed first")
        results.append(run_rollout(cp, stack, apply, WITH_SHADOW, regress_at=None))
        say("rollout 2: the same candidate, which starts failing 40% of requests at stage 2")
        cp.kubectl("delete", "mro", ROUTE, "-n", NAMESPACE, "--wait=true")
        apply(http_route(SHADOW))  # the stable (through the comparator) serves everything again
        results.append(run_rollout(cp, stack, apply, STAGES, regress_at=2))
        summary(stack, results, time.monotonic() - started)
        ok = [r["phase"] for r in results] == ["Succeeded", "RolledBack"]
        return 0 if ok else 1
    finally:
        say("cleaning up")
        if stack is not None:
            stack.close()
        procs.stop_all()
        if prometheus is not None:
            prometheus.close()
        cp.stop()
        left = procs.leaked()
        print("no process left behind" if not left else f"left behind: {left}")


def run_rollout(
    cp: ControlPlane, stack: Stack, apply: Any, strategy: dict[str, Any], regress_at: int | None
) -> dict[str, Any]:
    fault(cp, "0")
    # The route's stable backend is the comparator's Service, in front of fraud-v1.
    apply(rollout(stack.prometheus.url, strategy, stable={"service": SHADOW}))
    begun = time.monotonic()
    if regress_at is not None:
        threading.Thread(target=regress, args=(cp, regress_at), daemon=True).start()
    judged: dict[str, Any] = {}
    threading.Thread(target=keep_match_rate, args=(cp, judged), daemon=True).start()
    kube = ["--kubeconfig", str(cp.kubeconfig), "-n", NAMESPACE]
    plugin([*kube, "status", ROUTE, "--watch"])
    done = stack_rollout(cp)
    return {
        "object": done,
        "phase": done["status"]["phase"],
        "seconds": time.monotonic() - begun,
        "match-rate": judged.get("match-rate"),
    }


def keep_match_rate(cp: ControlPlane, judged: dict[str, Any]) -> None:
    """The last match-rate the operator wrote to status while the rollout ran (status
    holds the current stage's analysis only)."""
    while True:
        status = stack_rollout(cp).get("status") or {}
        for metric in status.get("analysis") or ():
            if metric["name"] == "match-rate" and metric.get("value") is not None:
                judged["match-rate"] = metric
        if status.get("phase") in ("Succeeded", "RolledBack", "Failed"):
            return
        time.sleep(1)


def stack_rollout(cp: ControlPlane) -> dict[str, Any]:
    text = cp.kubectl("get", "mro", ROUTE, "-n", NAMESPACE, "-o", "yaml")
    obj: dict[str, Any] = yaml.safe_load(text)
    return obj


def regress(cp: ControlPlane, at_stage: int) -> None:
    """Wait for `at_stage`, then make the candidate's servers fail requests."""
    while int((stack_rollout(cp).get("status") or {}).get("stage", 0)) < at_stage:
        time.sleep(0.5)
    fault(cp, "0.4")


def fault(cp: ControlPlane, error_rate: str) -> None:
    cp.kubectl(
        "annotate", "pods", "-l", f"deployment={CANDIDATE}",
        f"{FAULTS['error_rate']}={error_rate}", "--overwrite", "-n", NAMESPACE,
    )  # fmt: skip


def shadow_summary(stack: Stack, result: dict[str, Any], end: float) -> str:
    """The match rate the operator judged, and what the comparators counted by the
    stage's end (they copy in the shadow stage only, so all of it is that stage's)."""
    judged = result["match-rate"]
    query = (
        "sum by (result) (modelrollout_shadow_comparisons_total"
        f'{{namespace="{stack.namespace}",rollout="{ROUTE}"}})'
    )
    counted = {
        r["metric"]["result"]: float(r["value"][1])
        for r in stack.prometheus.query(query, at=end)["result"]
    }
    return (
        f"match rate {judged['value']:.4f} judged {judged['verdict']} "
        f"(slo >= {judged['slo']['min']:g}, abort below {judged['abort']['min']:g}); "
        f"the comparators counted {counted.get('match', 0):.0f} answers alike, "
        f"{counted.get('mismatch', 0):.0f} different, {counted.get('error', 0):.0f} errors"
    )


def summary(stack: Stack, results: list[dict[str, Any]], seconds: float) -> None:
    say("summary")
    for number, result in enumerate(results, 1):
        status = result["object"]["status"]
        last = status["history"][-1]
        cause = status["history"][-2] if result["phase"] == "RolledBack" else last
        print(
            f"rollout {number}: {result['phase']} after {result['seconds']:.0f}s, "
            f"stage {status['stage']}/{status['stageCount']}, weight {status['weight']}%: "
            f"{cause['reason']}: {cause['message'][:160]}"
        )
        for stage, weight, start, end in stage_windows(status["history"]):
            if stage == 1 and result["match-rate"] is not None:
                print(f"    stage {stage}: shadow, {shadow_summary(stack, result, end)}")
                continue
            share = 100 * stack.share(CANDIDATE, start, end)
            print(
                f"    stage {stage}: weight {weight:3d}%, Prometheus saw {share:6.2f}% of traffic"
            )
        drift = status.get("drift") or {}
        if drift:
            features = ", ".join(
                f"{f['feature']} {f.get('psi') or 0:.3f}" for f in drift["features"]
            )
            print(f"    drift: {drift['verdict']} (PSI {features})")
    print(f"demo finished in {seconds:.0f}s")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MissingPrerequisite as missing:
        print(f"demo: {missing}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
