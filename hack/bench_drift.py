"""The drift data path, side by side on the same generated files: `modelrollout reference
build` against the floor (pyarrow.csv.read_csv of the whole file, np.quantile, one
np.bincount per column) and the build plus `modelrollout psi` against Evidently's
data-drift report with the PSI method; then the PSI of each feature, ours against
Evidently's, with the reason for every difference.

Each tool runs in its own process; time is wall seconds (best of BENCH_REPEAT for ours
and the floor, one run of Evidently), memory the process's peak RSS. Nothing asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from numpy.typing import NDArray

Floats = NDArray[np.float64]

SIZES = [int(n) for n in os.environ.get("BENCH_ROWS", "1000000,5000000").split(",")]
FEATURES = int(os.environ.get("BENCH_FEATURES", "50"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
# Evidently took 14 minutes and 3 GB for 1M rows on the 2-core machine: beyond this many
# rows it is left out (and so is the PSI table, which needs its values).
EVIDENTLY_ROWS = int(os.environ.get("BENCH_EVIDENTLY_ROWS", "1000000"))
CURRENT_SHARE = 10  # the current data has a tenth of the reference's rows
BINS = 10
GOAL_FLOOR, GOAL_MB, GOAL_EVIDENTLY = 1.2, 300, 20
WRITE_ROWS = 250_000
DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[1] / ".cache" / "bench"))
DATA_VERSION = 1  # bump when the generated data changes

# A wrapper with a single child reports that child's own peak memory (KiB).
PEAK = """
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    subprocess.run(sys.argv[2:], check=True, stdout=out)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(used.ru_maxrss, used.ru_utime + used.ru_stime)
"""

FLOOR = """
import sys, numpy as np, pyarrow.csv
table = pyarrow.csv.read_csv(sys.argv[1])
quantiles = np.arange(1, int(sys.argv[2])) / int(sys.argv[2])
for column in table.columns:
    values = column.to_numpy()
    edges = np.unique(np.quantile(values, quantiles))
    np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
"""

# The quickest way to hand Evidently the data: pandas' pyarrow CSV engine.
EVIDENTLY = """
import json, sys, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
reference = pd.read_csv(sys.argv[1], engine="pyarrow")
current = pd.read_csv(sys.argv[2], engine="pyarrow")
snapshot = Report([DataDriftPreset(method="psi")]).run(current, reference)
print(json.dumps({m["config"]["column"]: m["value"] for m in snapshot.dict()["metrics"]
                  if m["config"]["type"].endswith(":ValueDrift")}))
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float
    cpu: float  # user + system seconds, all threads: what the run cost, whatever the load
    out: str


def measured(argv: Sequence[str], repeat: int = 1) -> Run:
    """Best wall time of `repeat` runs, the peak RSS (MB) of that run, and its stdout."""
    best: Run | None = None
    for _ in range(repeat):
        with tempfile.NamedTemporaryFile("r", suffix=".out") as out:
            started = time.perf_counter()
            peak = subprocess.run(
                [sys.executable, "-c", PEAK, out.name, *argv],
                check=True,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - started
            kib, cpu = peak.stdout.split()[-2:]
            run = Run(seconds, int(kib) * 1024 / 1e6, float(cpu), out.read())
        if best is None or run.seconds < best.seconds:
            best = run
    assert best is not None
    return best


# --- the data ---------------------------------------------------------------------------------

KINDS = ("normal", "lognormal", "exponential", "poisson", "zero-inflated")
DRIFTS = ("none", "small", "large", "truncated")


def kind_of(j: int) -> str:
    return KINDS[j % len(KINDS)]


def drift_of(j: int) -> str:
    return DRIFTS[(j // len(KINDS)) % len(DRIFTS)]


def column(kind: str, drift: str, rng: np.random.Generator, rows: int) -> Floats:
    """One feature's values; `drift` moves the current data away from the reference's
    ("truncated" drops the lowest tenth, so the current data leaves a bin empty)."""
    step = {"none": 0.0, "small": 0.05, "large": 0.5, "truncated": 0.0}[drift]
    if kind == "normal":
        values = np.round(rng.normal(step, 1, rows), 4)
    elif kind == "lognormal":
        values = np.round(rng.lognormal(step, 0.75, rows), 4)
    elif kind == "exponential":
        values = np.round(rng.exponential(1 + step, rows), 4)
    elif kind == "poisson":
        values = rng.poisson(3 + 2 * step, rows).astype(np.float64)
    else:
        zero = rng.random(rows) < 0.6 - step / 2
        values = np.where(zero, 0.0, np.round(rng.uniform(0, 100, rows), 2))
    if drift == "truncated":
        low = {"normal": -1.2816, "lognormal": 0.3825, "exponential": 0.1054}.get(kind)
        if low is not None:
            values = np.where(values <= low, np.round(low + rng.random(rows), 4), values)
    return values


def write_data(path: Path, rows: int, current: bool, seed: int) -> None:
    """A CSV file, written in slices so the bench's own memory stays small."""
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(FEATURES)]
    schema = pa.schema([(n, pa.float64()) for n in names])
    options = pa_csv.WriteOptions(quoting_style="none")
    with pa_csv.CSVWriter(str(path), schema, write_options=options) as writer:
        for start in range(0, rows, WRITE_ROWS):
            size = min(WRITE_ROWS, rows - start)
            columns = [
                column(kind_of(j), drift_of(j) if current else "none", rng, size)
                for j in range(FEATURES)
            ]
            writer.write_table(pa.table(dict(zip(names, columns, strict=True)), schema=schema))


# --- PSI, ours against Evidently's ----------------------------------------------------------


def evidently_bins(reference: Floats, current: Floats) -> tuple[Floats, Floats, str]:
    """Counts in the bins Evidently 0.7's PSI uses (legacy/calculations/stattests/utils.py,
    get_binned_data): one bin per value for 20 distinct reference values or fewer, else
    np.histogram's equal-width bins over both samples with Sturges' rule for their number."""
    if np.unique(reference).size <= 20:
        keys = np.union1d(reference, current)
        counts = [np.unique(side, return_counts=True) for side in (reference, current)]
        by_key = [dict(zip(k.tolist(), n.tolist(), strict=True)) for k, n in counts]
        r, c = ([d.get(k, 0) for k in keys.tolist()] for d in by_key)
        return np.array(r, float), np.array(c, float), f"{keys.size} values"
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    r = np.histogram(reference, edges)[0].astype(float)
    c = np.histogram(current, edges)[0].astype(float)
    return r, c, f"{edges.size - 1} equal-width"


def evidently_psi(reference: Floats, current: Floats) -> float:
    """Evidently's formula on its bins: a zero share becomes 1e-4, or the smallest
    non-zero share / 1e6 when that is at most 1e-4; other shares stay as they are."""
    shares = []
    for counts in (reference, current):
        p = counts / counts.sum()
        smallest = p[p != 0].min()
        p[p == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
        shares.append(p)
    r, c = shares
    return float(np.sum((r - c) * np.log(r / c)))


@dataclass(frozen=True)
class Agreement:
    feature: str
    data: str
    ours: float
    evidently: float
    ours_on_its_bins: float
    why: str


def agreement(
    files: tuple[Path, Path], ours: dict[str, float], theirs: dict[str, float]
) -> list[Agreement]:
    from modelrollout.core.drift import psi

    reference, current = (pa_csv.read_csv(path) for path in files)
    rows = []
    for j, name in enumerate(reference.column_names):
        r_values = reference.column(name).to_numpy()
        c_values = current.column(name).to_numpy()
        r, c, bins = evidently_bins(r_values, c_values)
        same_bins = psi(c, r)
        recomputed = evidently_psi(r, c)
        assert abs(recomputed - theirs[name]) <= 1e-9 * max(1.0, abs(recomputed)), (
            f"{name}: Evidently reported {theirs[name]}, its rules give {recomputed}"
        )
        why = _why(r / r.sum(), c / c.sum())
        data = f"{kind_of(j)}, {drift_of(j)}; its bins: {bins}"
        rows.append(Agreement(name, data, ours[name], theirs[name], same_bins, why))
    return rows


def _why(reference: Floats, current: Floats) -> str:
    """Where our smoothing and Evidently's part on the same bins (see evidently_psi)."""
    from modelrollout.core.drift import EPSILON

    reasons = []
    for side, p in (("reference", reference), ("current", current)):
        raised = int(np.count_nonzero((p > 0) & (p < EPSILON)))
        empty = int(np.count_nonzero(p == 0))
        if raised:
            reasons.append(f"{side}: {raised} share(s) in (0, 1e-4) we raise to 1e-4")
        if empty and p[p > 0].min() <= EPSILON:
            reasons.append(f"{side}: {empty} empty, Evidently min/1e6, ours 1e-4")
    if reasons:
        return "; ".join(reasons)
    empty = int(np.count_nonzero(reference == 0) + np.count_nonzero(current == 0))
    return f"agree: both give the {empty} empty share(s) 1e-4" if empty else "agree: none empty"


# --- the run --------------------------------------------------------------------------------


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelrollout.cli.main", *map(str, args)]


def data_files(rows: int) -> tuple[Path, Path]:
    """The reference and current CSV files, generated once per size into BENCH_DATA
    (writing 5M rows takes minutes): the same bytes for every run."""
    folder = DATA / f"drift-v{DATA_VERSION}-{rows}x{FEATURES}"
    reference, current = folder / "reference.csv", folder / "current.csv"
    if not (folder / "complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_data(reference, rows, current=False, seed=1)
        write_data(current, rows // CURRENT_SHARE, current=True, seed=2)
        (folder / "complete").touch()
    return reference, current


def bench_size(folder: Path, rows: int) -> tuple[list[str], list[str]]:
    reference, current = data_files(rows)
    load_before = os.getloadavg()[0]
    names = ",".join(f"f{j}" for j in range(FEATURES))
    manifest = folder / "reference.yaml"
    build = measured(
        cli("reference", "build", reference, "--features", names, "-o", manifest), REPEAT
    )
    floor = measured([sys.executable, "-c", FLOOR, str(reference), str(BINS)], REPEAT)
    check = measured(cli("psi", "--reference", manifest, current, "--json"), REPEAT)
    with_evidently = rows <= EVIDENTLY_ROWS
    theirs = None
    if with_evidently:
        theirs = measured([sys.executable, "-c", EVIDENTLY, str(reference), str(current)])
    size_mb = reference.stat().st_size / 1e6
    ours = Run(
        build.seconds + check.seconds,
        max(build.peak_mb, check.peak_mb),
        build.cpu + check.cpu,
        "",
    )
    speed = [
        f"drift data path: {rows:,} rows x {FEATURES} features "
        f"(reference CSV {size_mb:,.0f} MB; current {rows // CURRENT_SHARE:,} rows)",
        f"{'':46} {'time':>9} {'peak':>9} {'ratio':>11} {'cpu':>9} {'cpu ratio':>11}",
        _line("reference build (ours)", build, (floor, "floor")),
        _line("floor: read_csv, np.quantile, np.bincount", floor, (floor, "floor")),
        _line("psi of the current file (ours)", check),
        _line("build + psi (ours)", ours, (ours, "ours")),
    ]
    if theirs is None:
        speed.append(f"Evidently: not run above BENCH_EVIDENTLY_ROWS={EVIDENTLY_ROWS:,} rows")
    else:
        label = f"Evidently {version('evidently')}: DataDriftPreset(psi)"
        speed.append(_line(label, theirs, (ours, "ours")))
    speed.append(_goals(build, floor, check, theirs))
    speed.append(
        f"load average (1 min) on {os.cpu_count()} cores: {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after: ratios hold only if both ran under the same load"
    )
    table = []
    if theirs is not None:
        ours_psi = {f["feature"]: f["psi"] for f in json.loads(check.out)["features"]}
        table = _agreement_lines(agreement((reference, current), ours_psi, json.loads(theirs.out)))
    return speed, table


def _line(name: str, run: Run, base: tuple[Run, str] | None = None) -> str:
    """Time, peak and CPU, and the ratios of time and of CPU to a named base run's."""
    ratio = cpu_ratio = ""
    if base is not None:
        ratio = f"{run.seconds / base[0].seconds:.2f}x {base[1]}"
        cpu_ratio = f"{run.cpu / base[0].cpu:.2f}x {base[1]}"
    return (
        f"{name:46} {run.seconds:8.2f}s {run.peak_mb:7.0f}MB {ratio:>11} {run.cpu:8.2f}s "
        f"{cpu_ratio:>11}"
    )


def _goals(build: Run, floor: Run, check: Run, theirs: Run | None) -> str:
    to_floor = build.seconds / floor.seconds
    peak = max(build.peak_mb, check.peak_mb)
    verdicts = [
        f"build within {GOAL_FLOOR}x of the floor: {_met(to_floor <= GOAL_FLOOR)} "
        f"({to_floor:.2f}x; CPU {build.cpu / floor.cpu:.2f}x)",
        f"peak under {GOAL_MB} MB: {_met(peak < GOAL_MB)} ({peak:.0f} MB)",
    ]
    if theirs is not None:
        faster = theirs.seconds / (build.seconds + check.seconds)
        verdicts.append(
            f">= {GOAL_EVIDENTLY}x faster than Evidently: {_met(faster >= GOAL_EVIDENTLY)} "
            f"({faster:.1f}x; CPU {theirs.cpu / (build.cpu + check.cpu):.1f}x)"
        )
    return "goals: " + "; ".join(verdicts)


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _agreement_lines(rows: list[Agreement]) -> list[str]:
    agreeing = [abs(r.ours_on_its_bins - r.evidently) for r in rows if r.why.startswith("agree")]
    return [
        "PSI per feature: ours (reference deciles, `psi --json`), Evidently's (its own bins), "
        "and ours on Evidently's bins",
        f"{'feature':8} {'ours':>9} {'Evidently':>10} {'ours,its bins':>14} {'diff':>9}  "
        "data; why the last two differ",
        *(
            f"{r.feature:8} {r.ours:9.5f} {r.evidently:10.5f} {r.ours_on_its_bins:14.5f} "
            f"{r.ours_on_its_bins - r.evidently:9.2e}  {r.data}; {r.why}"
            for r in rows
        ),
        f"{len(agreeing)} of {len(rows)} agree on the same bins, the largest difference "
        f"{max(agreeing, default=0.0):.1e}; Evidently's values, recomputed from its binning "
        "and smoothing rules, match its report to 1e-9",
    ]


def main(print_line: Callable[[str], None] = print) -> None:
    for rows in SIZES:
        with tempfile.TemporaryDirectory(prefix="modelrollout-bench-") as folder:
            speed, table = bench_size(Path(folder), rows)
        for line in [*speed, "", *table, *([""] if table else [])]:
            print_line(line)


if __name__ == "__main__":
    main()
