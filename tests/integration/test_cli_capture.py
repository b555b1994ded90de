"""`modelrollout reference capture` against a real Prometheus scraping real exporter
processes: the stable's histograms over a window become the ConfigMap `reference
build` writes, with the gate's bins and the proportions of exactly what was observed.

It needs no control plane: Prometheus and the exporters only. Written against what
every Prometheus 2.x and 3.x answers (`increase`, `count_over_time`, `le` labels as
exporters write them, and only `_bucket` series, which every exposition format
carries), so it does not depend on which one the test bed runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelrollout.cli.bins import le_counts
from modelrollout.reference import Distribution, Reference, parse_reference
from testbed import Prometheus, free_port, procs
from testbed.prometheus import values

from .scenario import Exporters

NAMESPACE, STABLE = "shop", "model-v1"
EDGES = (-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816)
SCORE_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CATEGORIES = {"DE": 50, "FR": 30, "US": 20}

CATEGORY_SERVER = Path(__file__).with_name("category_server.py")


def reference_with_edges(*names: str) -> Reference:
    return Reference(
        samples=1,
        features=tuple(Distribution(name=n, edges=EDGES, proportions=(0.1,) * 10) for n in names),
    )


# A guard against a hung command, not a bound on its speed: a capture costs about 3 s of
# CPU, but on the shared 2-core machine at a load average of 30 starting Python alone
# took over 60 s of wall time.
HUNG = 300


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelrollout.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HUNG,
    )


@pytest.fixture
def stable(
    prometheus: Prometheus, spawn: Callable[..., procs.Proc], tmp_path: Path
) -> Callable[..., Exporters]:
    """The stable Deployment's exporters: feature histograms on EDGES (testbed.exporter),
    and the category counter and score histogram; both scraped as the stable's."""

    def start(scores: list[float]) -> Exporters:
        path = tmp_path / "edges.yaml"
        path.write_text(reference_with_edges("amount", "age").to_yaml())
        features, categories = free_port(), free_port()
        argv = [
            sys.executable, "-m", "testbed.exporter", "--port", str(features),
            "--reference", str(path), "--feature-rps", "0", "--lifetime", "120",
        ]  # fmt: skip
        spawn("exporter-features", argv, env={"PYTHONPATH": "tests"})
        argv = [
            sys.executable, CATEGORY_SERVER, str(categories),
            json.dumps(CATEGORIES), json.dumps(SCORE_EDGES), json.dumps(scores),
        ]  # fmt: skip
        spawn("exporter-categories", argv)
        labels = {"namespace": NAMESPACE, "deployment": STABLE}
        prometheus.set_targets(
            [{"targets": [f"127.0.0.1:{p}"], "labels": labels} for p in (features, categories)]
        )
        prometheus.wait_for(
            f'count(up{{namespace="{NAMESPACE}"}} == 1)', lambda r: values(r) == [2.0], 30
        )
        return Exporters({STABLE: features})

    return start


def capture(prometheus: Prometheus, out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "reference", "capture", "--prometheus", prometheus.url,
        "--histogram", "model_feature_value", "--features", "amount,age",
        "--categorical-counter", "model_feature_category_total", "--categorical", "country",
        "--score-histogram", "model_score",
        "--namespace", NAMESPACE, "--deployment", STABLE,
        "--name", "stable-before-v2", "-o", out, *more,
    )  # fmt: skip


def test_capture_writes_the_stables_observed_distribution_as_build_would(
    prometheus: Prometheus, stable: Callable[..., Exporters], tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    amount, age = rng.normal(0.3, 1.0, 1_200), rng.normal(0.0, 0.5, 1_200)
    scores = rng.beta(2, 5, 400).round(3).tolist()
    servers = stable(scores)
    time.sleep(2.5)  # a scrape of the zero counts inside the window
    before = time.time()
    servers.configure(STABLE, feed={"amount": amount.tolist(), "age": age.tolist()})
    prometheus.wait_for(
        f'sum(model_feature_value_bucket{{deployment="{STABLE}",le="+Inf"}})',
        lambda r: values(r) == [2_400.0],
        20,
    )
    prometheus.wait_for(
        f'sum(model_score_bucket{{deployment="{STABLE}",le="+Inf"}})',
        lambda r: values(r) == [400.0],
        20,
    )
    time.sleep(2)  # and a scrape after them

    out = tmp_path / "reference.yaml"
    done = capture(prometheus, out, "--window", "1m")
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = yaml.safe_load(out.read_text())
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("ConfigMap", "stable-before-v2")
    reference = parse_reference(manifest["data"]["reference.yaml"])
    assert [f.name for f in reference.features] == ["amount", "age", "country"]
    for name, observed in (("amount", amount), ("age", age)):
        feature = reference.feature(name)
        assert feature is not None
        assert feature.edges == EDGES  # the gate's bins, as the server exports them
        counts = le_counts(observed, np.array(EDGES))
        assert feature.proportions == pytest.approx(counts / counts.sum(), abs=1e-9)
    country = reference.feature("country")
    assert country is not None
    assert country.categories == ("DE", "FR", "US")  # most frequent first, as build
    assert country.proportions == pytest.approx((0.5, 0.3, 0.2), abs=1e-9)
    assert reference.score is not None
    assert reference.score.edges == SCORE_EDGES
    score_counts = le_counts(np.array(scores), np.array(SCORE_EDGES))
    assert reference.score.proportions == pytest.approx(score_counts / 400, abs=1e-9)
    # increase() over the window, deflated by the share of it the scrapes saw
    assert 0 < reference.samples < 400
    assert f"wrote {out}: ConfigMap stable-before-v2" in done.stdout

    # `psi` reads it like a built reference: the same values have a PSI of 0
    data = tmp_path / "today.csv"
    country = [k for k, n in CATEGORIES.items() for _ in range(n * 12)]  # 1,200 rows
    lines = [
        f"{a!r},{b!r},{c}" for a, b, c in zip(amount.tolist(), age.tolist(), country, strict=True)
    ]
    data.write_text("amount,age,country\n" + "\n".join(lines) + "\n")
    psi = cli("psi", "--reference", out, data, "--json")
    assert psi.returncode == 0, psi.stderr
    assert yaml.safe_load(psi.stdout)["aggregate"] == pytest.approx(0.0, abs=1e-9)

    # a window that ends before anything was observed has nothing to capture
    earlier = tmp_path / "earlier.yaml"
    done = capture(prometheus, earlier, "--window", "1m", "--at", f"{before - 30:.3f}")
    assert done.returncode == 2
    assert done.stderr.startswith("modelrollout: error: no observations of amount, age")
    assert f'deployment="{STABLE}"' in done.stderr
    assert not earlier.exists()


def test_capture_names_what_it_cannot_find_and_writes_nothing(
    prometheus: Prometheus, stable: Callable[..., Exporters], tmp_path: Path
) -> None:
    stable([0.5])
    out = tmp_path / "reference.yaml"
    done = cli(
        "reference", "capture", "--prometheus", prometheus.url, "--window", "5m",
        "--histogram", "model_feature_value", "--features", "amount,tenure",
        "--namespace", NAMESPACE, "--deployment", "model-v9", "-o", out,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "modelrollout: error: no observations of amount, tenure with "
        f'namespace="{NAMESPACE}",deployment="model-v9" over 5m\n'
    )
    refused = cli(
        "reference", "capture", "--prometheus", prometheus.url, "--window", "5m",
        "--histogram", "model_feature_value", "--features", "amount",
        "--selector", 'deployment=~"(", namespace="x"', "-o", out,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith("modelrollout: error: Prometheus refused ")
    assert not out.exists()
