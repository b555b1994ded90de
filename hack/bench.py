"""`make bench`: speed and memory, each as a ratio against a baseline run side by side
on the same machine and input, so the numbers mean something on any machine.

- reference build: `modelrollout reference build` on a generated CSV (rows x features)
  against the obvious implementation (np.loadtxt the whole file, np.quantile, count);
  time and peak memory of each, in its own process.
- decision core: `step()` for one tick of many rollouts in flight, against a baseline
  that only copies the status (the least any tick must do).
- drift gate: judging one tick of a gate with 32 features of 10 bins, against computing
  the bare PSI values with numpy.
Nothing here asserts a time: it prints a table. Sizes: BENCH_ROWS, BENCH_FEATURES.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
FEATURES = int(os.environ.get("BENCH_FEATURES", "50"))

BASELINE_BUILD = """
import sys, numpy as np
data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
for column in data.T:
    edges = np.unique(np.quantile(column, np.linspace(0.1, 0.9, 9)))
    np.bincount(np.searchsorted(edges, column, side="left"), minlength=len(edges) + 1)
"""


# A wrapper with a single child reports that child's own peak memory.
PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measured(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a child process."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, *argv], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return seconds, int(out.stdout.split()[-1]) / 1024


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_reference_build(folder: Path) -> list[tuple[str, float, float, str]]:
    path = folder / "train.csv"
    rng = np.random.default_rng(1)
    header = ",".join(f"f{i}" for i in range(FEATURES))
    with path.open("w") as out:
        out.write(header + "\n")
        for start in range(0, ROWS, 100_000):
            block = rng.normal(0, 1, (min(100_000, ROWS - start), FEATURES))
            np.savetxt(out, block, delimiter=",", fmt="%.6g")
    features = ",".join(f"f{i}" for i in range(FEATURES))
    build = ["reference", "build", str(path), "--features", features, "-o", str(folder / "r")]
    ours = measured([sys.executable, "-m", "modelrollout.cli.main", *build])
    baseline = measured([sys.executable, "-c", BASELINE_BUILD, str(path)])
    label = f"reference build, {ROWS:,} rows x {FEATURES}"
    return [
        (f"{label}: time", ours[0], baseline[0], "s"),
        (f"{label}: peak memory", ours[1], baseline[1], "MiB"),
    ]


def bench_step() -> tuple[str, float, float, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
    from world import World, gateway_spec  # the pure stand-in world of the unit tests

    worlds = [World(gateway_spec()) for _ in range(1000)]
    for world in worlds:
        for _ in range(3):
            world.tick()
    from modelrollout.core.machine import step

    now = datetime.now(UTC) + timedelta(seconds=5)
    observed = [(w.spec, w.status, w.observations()) for w in worlds]

    def ours() -> None:
        for spec, status, obs in observed:
            step(spec, status, obs, now)

    def baseline() -> None:
        for _, status, _ in observed:
            status.model_copy(deep=True)

    return ("step(), one tick of 1,000 rollouts", timed(ours), timed(baseline), "s")


def bench_drift() -> tuple[str, float, float, str]:
    from modelrollout.api.spec import DriftGate
    from modelrollout.core.drift import Bins, FeatureObservation, judge, psi

    names = [f"f{i}" for i in range(32)]
    gate = DriftGate.model_validate(
        {"histogram": "h", "features": names, "reference": {"configMapRef": {"name": "r"}}}
    )
    edges = tuple(float(e) for e in range(1, 10))
    rng = np.random.default_rng(2)
    counts = [tuple(float(c) for c in rng.multinomial(5000, [0.1] * 10)) for _ in names]
    reference = Bins(edges, (0.1,) * 10, numeric=True)
    features = [
        FeatureObservation(n, Bins(edges, c, numeric=True), reference, 1e6)
        for n, c in zip(names, counts, strict=True)
    ]
    now = datetime.now(UTC)
    return (
        "drift gate, 32 features x 10 bins",
        timed(lambda: judge(gate, features, now)),
        timed(lambda: [psi(c, reference.counts) for c in counts]),
        "s",
    )


def main() -> int:
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="modelrollout-bench-") as folder:
        rows += bench_reference_build(Path(folder))
    rows += [bench_step(), bench_drift()]
    print(f"{'benchmark':58} {'ours':>10} {'baseline':>10} {'ratio':>7}")
    for name, ours, baseline, unit in rows:
        print(f"{name:58} {ours:9.3g}{unit:<1} {baseline:9.3g}{unit:<1} {ours / baseline:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
