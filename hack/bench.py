"""`make bench`: speed and memory, each as a ratio against a baseline run side by side
on the same machine and input, so the numbers mean something on any machine.

- the drift data path (hack/bench_drift.py): `reference build` against the floor
  (pyarrow's read_csv, np.quantile, np.bincount) and, with `psi`, against Evidently;
  time and peak memory of each in its own process, and the PSI values side by side.
- decision core: `step()` for one tick of many rollouts in flight, against a baseline
  that only copies the status (the least any tick must do).
- drift gate: judging one tick of a gate with 32 features of 10 bins, against computing
  the bare PSI values with numpy.
Nothing here asserts a time: it prints tables. Sizes: BENCH_ROWS (a comma-separated list),
BENCH_FEATURES.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


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
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_drift as data_path  # hack/ is no package

    data_path.main()
    rows = [bench_step(), bench_drift()]
    print(f"{'benchmark':58} {'ours':>10} {'baseline':>10} {'ratio':>7}")
    for name, ours, baseline, unit in rows:
        print(f"{name:58} {ours:9.3g}{unit:<1} {baseline:9.3g}{unit:<1} {ours / baseline:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
