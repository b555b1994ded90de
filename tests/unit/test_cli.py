"""The `modelrollout` CLI: `reference build` bins training data at its quantiles with
Prometheus' `le` semantics and writes a ConfigMap; `psi` agrees with core.drift.psi;
bad input is one line on stderr and exit code 2; CSV numbers read exactly as float()."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.cli import build as build_module
from modelrollout.cli import csv_table
from modelrollout.cli.bins import le_counts
from modelrollout.cli.main import main
from modelrollout.cli.table import DataProblem
from modelrollout.core.drift import psi
from modelrollout.reference import Reference, parse_reference

DECILES = np.arange(1, 10) / 10
FieldProblem = DataProblem  # what the hand-written block parser raised, before pyarrow


@dataclass(frozen=True)
class Block:
    numbers: np.ndarray
    categories: tuple[dict[str, int], ...]


def parse_block(
    data: bytes, columns: int, numeric: Sequence[int], categorical: Sequence[int]
) -> Block:
    """The removed block parser's interface, over CsvTable: `data` under a header
    c0,c1,..., the columns at these positions read as numbers or as categories."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "block.csv"
        path.write_bytes(",".join(f"c{i}" for i in range(columns)).encode() + b"\n" + data)
        table = csv_table.CsvTable(path)
        chunks = list(table.chunks([f"c{i}" for i in numeric], [f"c{i}" for i in categorical]))
    numbers = [np.concatenate(c) for c in zip(*(k.numbers for k in chunks), strict=True)]
    counted = [
        sum(map(Counter, c), Counter()) for c in zip(*(k.categories for k in chunks), strict=True)
    ]
    return Block(np.column_stack(numbers), tuple(dict(c) for c in counted))


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_csv(path: Path, columns: dict[str, Sequence[Any]]) -> Path:
    """Floats as repr, so the file holds exactly the values the test knows."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    lines = [",".join(names)] + [",".join(_cell(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float | np.floating) else str(value)


def training(rng: np.random.Generator, rows: int = 1000) -> dict[str, Any]:
    return {
        "age": rng.normal(40, 12, rows),
        "income": rng.lognormal(10, 0.5, rows),
        "country": rng.choice(["DE", "FR", "US", "JP"], rows, p=[0.4, 0.3, 0.2, 0.1]),
        "score": rng.random(rows),
    }


def build(
    capsys: pytest.CaptureFixture[str], data: Path, out: Path, *options: str
) -> tuple[Reference, str]:
    code, printed, err = run(capsys, "reference", "build", data, "-o", out, *options)
    assert code == 0, err
    (text,) = yaml.safe_load(out.read_text())["data"].values()
    return parse_reference(text), printed


def build_from_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, seed: int, *options: str
) -> tuple[dict[str, Any], Reference]:
    """The training data of `seed` (in train.csv) and the reference `build` makes of it."""
    data = training(np.random.default_rng(seed))
    csv = write_csv(tmp_path / "train.csv", data)
    reference, _ = build(capsys, csv, tmp_path / "ref.yaml", *options)
    return data, reference


def psi_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict[str, Any]:
    code, out, err = run(capsys, "psi", "--json", *args)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def by_feature(report: dict[str, Any]) -> dict[str, float]:
    return {f["feature"]: f["psi"] for f in report["features"]}


def le_bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per `le` bin, written out with comparisons (not searchsorted)."""
    bounds = [-np.inf, *edges, np.inf]
    return np.array([np.sum((values > lo) & (values <= hi)) for lo, hi in pairwise(bounds)])


# --- reference build ------------------------------------------------------------------------


def test_build_puts_the_edges_at_the_deciles_with_a_tenth_of_the_rows_in_each_bin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, reference = build_from_training(capsys, tmp_path, 1, "--features", "age,income")
    assert reference.samples == 1000
    assert [f.name for f in reference.features] == ["age", "income"]
    for feature in reference.features:
        assert feature.edges is not None
        assert np.array_equal(feature.edges, np.quantile(data[feature.name], DECILES))
        assert feature.proportions == pytest.approx([0.1] * 10, abs=1e-12)


def test_a_value_on_an_edge_counts_in_the_bin_the_edge_closes() -> None:
    edges = np.array([1.0, 2.0, 3.0])
    values = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 3.0, 3.5, 100.0])
    assert le_counts(values, edges).tolist() == [2, 2, 2, 2]  # (-inf,1] (1,2] (2,3] (3,inf)


def test_built_proportions_follow_le_when_the_deciles_fall_on_data_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0..100: the deciles are 10, 20, ..., 90 exactly, and each belongs to the bin
    below it, so the first bin holds 0..10 (11 values) and the others 10 each."""
    data = write_csv(tmp_path / "ints.csv", {"x": list(range(101))})
    reference, _ = build(capsys, data, tmp_path / "ref.yaml", "--features", "x")
    (x,) = reference.features
    assert x.edges == tuple(float(e) for e in range(10, 100, 10))
    assert x.proportions == pytest.approx([11 / 101] + [10 / 101] * 9, abs=1e-12)


def test_a_heavily_repeated_value_merges_edges_into_fewer_bins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = [0.0] * 700 + [float(v) for v in range(1, 301)]
    data = write_csv(tmp_path / "zeros.csv", {"clicks": values})
    reference, _ = build(capsys, data, tmp_path / "ref.yaml", "--features", "clicks")
    (clicks,) = reference.features
    assert clicks.edges == tuple(np.unique(np.quantile(values, DECILES)))
    assert clicks.edges is not None
    assert clicks.edges[0] == 0.0  # the 0.1 to 0.6 deciles, once
    assert len(clicks.edges) == 4
    assert clicks.proportions == pytest.approx([0.7, 0.0, 0.1, 0.1, 0.1], abs=1e-12)


def test_build_counts_every_row_exactly_when_the_edges_come_from_a_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of many blocks and a sample of 500 of its 20,000 rows: the edges are near
    the deciles, and the proportions are the exact counts of all rows in those bins."""
    monkeypatch.setattr(csv_table, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(build_module, "SAMPLE_VALUES", 1000)
    rng = np.random.default_rng(2)
    values = {"a": rng.normal(0, 1, 20_000), "b": rng.exponential(3, 20_000)}
    data = write_csv(tmp_path / "big.csv", values)
    reference, _ = build(capsys, data, tmp_path / "ref.yaml", "--features", "a,b")
    assert reference.samples == 20_000
    for feature in reference.features:
        assert feature.edges is not None
        column = values[feature.name]
        counts = le_bins(column, feature.edges)
        assert feature.proportions == pytest.approx(counts / 20_000, abs=1e-12)
        assert not np.array_equal(feature.edges, np.quantile(column, DECILES))  # sampled
        assert np.abs(np.array(feature.proportions) - 0.1).max() < 0.05


def test_categorical_features_get_their_categories_and_shares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, reference = build_from_training(
        capsys, tmp_path, 3, "--features", "age", "--categorical", "country"
    )
    country = reference.feature("country")
    assert country is not None
    assert country.edges is None
    assert country.categories == ("DE", "FR", "US", "JP")  # most frequent first
    names, counts = np.unique(data["country"], return_counts=True)
    expected = dict(zip(names.tolist(), (counts / 1000).tolist(), strict=True))
    assert dict(zip(country.categories, country.proportions, strict=True)) == pytest.approx(
        expected
    )


def test_the_score_column_becomes_the_score_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, reference = build_from_training(
        capsys, tmp_path, 4, "--features", "age", "--score", "score"
    )
    assert reference.score is not None
    assert reference.score.name == "score"
    assert reference.score.edges is not None
    assert np.array_equal(reference.score.edges, np.quantile(data["score"], DECILES))
    assert [f.name for f in reference.features] == ["age"]


def test_build_writes_a_configmap_and_prints_the_edges_to_paste(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "train.csv", training(np.random.default_rng(5)))
    out = tmp_path / "ref.yaml"
    reference, printed = build(
        capsys, csv, out, "--features", "age", "--categorical", "country", "--score", "score",
        "--name", "fraud-v3", "--key", "training.yaml",
    )  # fmt: skip
    manifest = yaml.safe_load(out.read_text())
    assert manifest["kind"] == "ConfigMap"
    assert manifest["metadata"]["name"] == "fraud-v3"
    assert list(manifest["data"]) == ["training.yaml"]
    assert parse_reference(manifest["data"]["training.yaml"]) == reference
    pasted = yaml.safe_load("\n".join(line for line in printed.splitlines()[1:]))
    assert reference.score is not None
    assert pasted == {
        "age": list(reference.features[0].edges or ()),
        "country": list(reference.features[1].categories or ()),
        "score": list(reference.score.edges or ()),
    }


def test_build_to_stdout_keeps_the_edges_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "train.csv", training(np.random.default_rng(6)))
    code, out, err = run(capsys, "reference", "build", csv, "--features", "age", "-o", "-")
    assert code == 0
    reference = parse_reference(yaml.safe_load(out)["data"]["reference.yaml"])
    assert f"age: {json.dumps(list(reference.features[0].edges or ()))}" in err


# --- psi ------------------------------------------------------------------------------------


def test_psi_of_the_training_data_against_its_own_reference_is_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "train.csv", training(np.random.default_rng(7)))
    ref = tmp_path / "ref.yaml"
    build(
        capsys, csv, ref, "--features", "age,income", "--categorical", "country", "--score", "score"
    )
    report = psi_json(capsys, "--reference", ref, csv)
    assert by_feature(report) == {"age": 0.0, "income": 0.0, "country": 0.0, "score": 0.0}
    assert report["aggregate"] == 0.0


def test_psi_of_shifted_data_is_core_drift_psi_of_its_le_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(8)
    train = training(rng)
    shifted = training(rng, rows=600)
    shifted["age"] = shifted["age"] + 6
    shifted["income"] = shifted["income"] * 1.1
    ref = tmp_path / "ref.yaml"
    reference, _ = build(
        capsys, write_csv(tmp_path / "train.csv", train), ref, "--features", "age,income"
    )
    today = write_csv(tmp_path / "today.csv", shifted)
    report = psi_json(capsys, "--reference", ref, today)
    expected = {
        f.name: psi(le_bins(shifted[f.name], f.edges or ()), f.proportions)
        for f in reference.features
    }
    assert by_feature(report) == pytest.approx(expected, rel=1e-12)
    assert expected["age"] > 0.1
    assert report["aggregate"] == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    assert report["aggregateMethod"] == "mean"
    assert all(f["samples"] == 600 for f in report["features"])
    maximum = psi_json(capsys, "--reference", ref, today, "--aggregate", "max")
    assert maximum["aggregate"] == pytest.approx(max(expected.values()), rel=1e-12)
    assert maximum["aggregateMethod"] == "max"


def test_an_unseen_category_is_a_bin_of_its_own_with_no_reference_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = tmp_path / "ref.yaml"
    train = {"country": ["DE"] * 50 + ["FR"] * 30 + ["US"] * 20}
    reference, _ = build(
        capsys, write_csv(tmp_path / "train.csv", train), ref, "--categorical", "country"
    )
    today = {"country": ["DE"] * 40 + ["FR"] * 30 + ["BR"] * 20 + ["AR"] * 10}
    report = psi_json(capsys, "--reference", ref, write_csv(tmp_path / "today.csv", today))
    # The reference's categories, then the unseen ones sorted: DE FR US AR BR.
    expected = psi([40, 30, 0, 10, 20], [0.5, 0.3, 0.2, 0.0, 0.0])
    assert by_feature(report)["country"] == pytest.approx(expected, rel=1e-12)
    assert reference.features[0].categories == ("DE", "FR", "US")


def test_psi_checks_the_score_when_the_data_has_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(9)
    ref = tmp_path / "ref.yaml"
    reference, _ = build(
        capsys,
        write_csv(tmp_path / "t.csv", training(rng)),
        ref,
        "--features",
        "age",
        "--score",
        "score",
    )
    today = training(rng, rows=500)
    today["score"] = today["score"] ** 2
    report = psi_json(capsys, "--reference", ref, write_csv(tmp_path / "today.csv", today))
    assert reference.score is not None
    expected = psi(
        le_bins(today["score"], reference.score.edges or ()), reference.score.proportions
    )
    assert [(f["feature"], f["kind"]) for f in report["features"]] == [
        ("age", "numeric"),
        ("score", "score"),
    ]
    assert by_feature(report)["score"] == pytest.approx(expected, rel=1e-12)
    without = {k: v for k, v in today.items() if k != "score"}
    report = psi_json(capsys, "--reference", ref, write_csv(tmp_path / "noscore.csv", without))
    assert [f["feature"] for f in report["features"]] == ["age"]


def test_psi_json_has_the_documented_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "t.csv", training(np.random.default_rng(10)))
    ref = tmp_path / "ref.yaml"
    build(capsys, csv, ref, "--features", "age", "--categorical", "country")
    report = psi_json(capsys, "--reference", ref, csv)
    assert set(report) == {"features", "aggregate", "aggregateMethod", "band"}
    assert report["features"] == [
        {"feature": "age", "kind": "numeric", "psi": 0.0, "samples": 1000, "band": "stable"},
        {
            "feature": "country",
            "kind": "categorical",
            "psi": 0.0,
            "samples": 1000,
            "band": "stable",
        },
    ]


def test_psi_prints_a_table_with_bands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(11)
    ref = tmp_path / "ref.yaml"
    build(capsys, write_csv(tmp_path / "t.csv", training(rng)), ref, "--features", "age,income")
    today = training(rng, rows=2000)
    today["age"] = today["age"] + 30
    code, out, _ = run(capsys, "psi", "--reference", ref, write_csv(tmp_path / "d.csv", today))
    assert code == 0
    header, age, income, total = out.splitlines()
    assert header.split() == ["feature", "kind", "psi", "samples", "band"]
    assert age.split()[0::3] == ["age", "2000"]
    assert age.split()[-1] == "drift"
    assert income.split()[-1] == "stable"
    assert total.startswith("mean PSI ")
    assert total.endswith(": drift")


def test_psi_reads_a_bare_reference_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "t.csv", training(np.random.default_rng(12)))
    reference, _ = build(capsys, csv, tmp_path / "ref.yaml", "--features", "age,income")
    bare = tmp_path / "bare.yaml"
    bare.write_text(reference.to_yaml())
    assert by_feature(psi_json(capsys, "--reference", bare, csv)) == {"age": 0.0, "income": 0.0}


def test_parquet_gives_the_reference_csv_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as arrow  # a dev dependency: a missing one fails, never skips
    import pyarrow.parquet as parquet

    data = training(np.random.default_rng(13))
    csv = write_csv(tmp_path / "t.csv", data)
    table = arrow.table({k: list(v) for k, v in data.items()})
    parquet.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    options = ("--features", "age,income", "--categorical", "country", "--score", "score")
    from_csv, _ = build(capsys, csv, tmp_path / "a.yaml", *options)
    from_parquet, _ = build(capsys, tmp_path / "t.parquet", tmp_path / "b.yaml", *options)
    assert from_parquet == from_csv


def test_parquet_bad_values_are_named_like_csv_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as arrow  # a dev dependency: a missing one fails, never skips
    import pyarrow.parquet as parquet

    columns = {"a": [1.0, None], "b": ["1", "x"], "c": [1.0, float("inf")], "k": ["u", None]}
    parquet.write_table(arrow.table(columns), tmp_path / "d.parquet")
    problems = {
        "a": "column 'a', row 2: missing value",
        "b": "column 'b', row 2: 'x' is not a number",
        "c": "column 'c', row 2: 'inf' is not a finite number",
        "zz": "no column 'zz'; it has: a, b, c, k",
    }
    for column, problem in problems.items():
        code, _, err = run(
            capsys, "reference", "build", tmp_path / "d.parquet", "--features", column
        )
        assert (code, err) == (2, f"modelrollout: error: d.parquet: {problem}\n")
    code, _, err = run(capsys, "reference", "build", tmp_path / "d.parquet", "--categorical", "k")
    assert (code, err) == (2, "modelrollout: error: d.parquet: column 'k', row 2: missing value\n")


def test_parquet_without_pyarrow_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    code, _, err = run(capsys, "reference", "build", tmp_path / "t.parquet", "--features", "a")
    assert code == 2
    assert err == "modelrollout: error: Parquet needs pyarrow: pip install pyarrow\n"


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("1,2\n3,\n", "column 'b', row 2 (line 3): missing value"),
        ("1,2\n3,4\n,6\n", "column 'a', row 3 (line 4): missing value"),
        ("1,2\n3,4x\n", "column 'b', row 2 (line 3): '4x' is not a number"),
        ("1,2\nNA,4\n", "column 'a', row 2 (line 3): 'NA' is not a number"),
        ("1,2\n3,nan\n", "column 'b', row 2 (line 3): 'nan' is not a finite number"),
        ("1,2\n-inf,4\n", "column 'a', row 2 (line 3): '-inf' is not a finite number"),
        ("1,2\n3,4,5\n", "row 2 (line 3) has 3 fields; the header has 2"),
    ],
)
def test_a_bad_value_names_its_column_and_row_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n" + body)
    code, out, err = run(
        capsys, "reference", "build", csv, "--features", "a,b", "-o", tmp_path / "r"
    )
    assert (code, out) == (2, "")
    assert err == f"modelrollout: error: d.csv: {expected}\n"
    assert not (tmp_path / "r").exists()


def test_a_bad_value_deep_in_a_large_file_has_its_own_row_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_table, "BLOCK_BYTES", 1024)
    rows = [f"{i},{i * 0.5}" for i in range(5000)]
    rows[4321] = "4321,oops"
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n" + "\n".join(rows) + "\n")
    code, _, err = run(capsys, "reference", "build", csv, "--features", "a,b")
    assert code == 2
    assert (
        err
        == "modelrollout: error: d.csv: column 'b', row 4322 (line 4323): 'oops' is not a number\n"
    )


def test_a_missing_column_is_named_with_the_columns_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "t.csv", training(np.random.default_rng(14)))
    code, _, err = run(capsys, "reference", "build", csv, "--features", "age,salary")
    assert code == 2
    assert err == (
        "modelrollout: error: t.csv: no column 'salary'; it has: age, income, country, score\n"
    )
    ref = tmp_path / "ref.yaml"
    build(capsys, csv, ref, "--features", "age,income")
    code, _, err = run(
        capsys, "psi", "--reference", ref, write_csv(tmp_path / "x.csv", {"age": [1.0]})
    )
    assert code == 2
    assert err == "modelrollout: error: x.csv: no column 'income'; it has: age\n"


@pytest.mark.parametrize(
    ("reference_text", "expected"),
    [
        (
            "kind: ConfigMap\ndata:\n  other.yaml: x\n",
            "the ConfigMap has no data key reference.yaml; it has: other.yaml",
        ),
        (
            "format: rollouts.mlops.io/drift-reference-v1\nsamples: 0\n",
            "samples: Input should be greater than or equal to 1",
        ),
        ("[unclosed", "not YAML"),
    ],
)
def test_a_bad_reference_exits_2_saying_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reference_text: str, expected: str
) -> None:
    ref = tmp_path / "ref.yaml"
    ref.write_text(reference_text)
    csv = write_csv(tmp_path / "t.csv", {"a": [1.0, 2.0]})
    code, _, err = run(capsys, "psi", "--reference", ref, csv)
    assert code == 2
    assert err.startswith("modelrollout: error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_other_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_category = write_csv(tmp_path / "c.csv", {"country": ["DE"] * 5})
    code, _, err = run(capsys, "reference", "build", one_category, "--categorical", "country")
    assert (code, err) == (
        2,
        "modelrollout: error: categorical feature 'country' has only 'DE': "
        "PSI needs two categories\n",
    )
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,b\n")
    code, _, err = run(capsys, "reference", "build", header_only, "--features", "a")
    assert (code, err) == (2, "modelrollout: error: h.csv: no data rows\n")
    code, _, err = run(capsys, "reference", "build", tmp_path / "missing.csv", "--features", "a")
    assert (code, err) == (2, f"modelrollout: error: {tmp_path / 'missing.csv'}: no such file\n")
    with pytest.raises(SystemExit) as exited:
        main(["reference", "build", str(header_only), "--features", "a", "--bins", "1"])
    assert exited.value.code == 2


# --- reading CSV ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b'city,x\r\n"Paris, FR",1.5\r\nBerlin,2.5\r\n"Paris, FR",-3e2',  # csv module
        b'"city","x"\n"Paris, FR","1.5"\n"Berlin",2.5\n"Paris, FR",-3e2\n',
    ],
)
def test_quotes_crlf_and_a_missing_final_newline_read_like_plain_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes
) -> None:
    csv = tmp_path / "q.csv"
    csv.write_bytes(text)
    reference, _ = build(
        capsys, csv, tmp_path / "r.yaml", "--features", "x", "--categorical", "city"
    )
    city = reference.feature("city")
    assert city is not None
    assert dict(zip(city.categories or (), city.proportions, strict=True)) == pytest.approx(
        {"Paris, FR": 2 / 3, "Berlin": 1 / 3}
    )
    assert reference.samples == 3
    assert reference.features[0].edges == tuple(np.quantile([1.5, 2.5, -300.0], DECILES))


def test_quotes_around_every_string_keep_the_fast_path_exact() -> None:
    """R's write.csv style: each string quoted, an escaped quote falls back whole."""
    plain = parse_block(b'"DE",1.5\n"FR","2"\n', 2, [1], [0])
    assert plain.numbers[:, 0].tolist() == [1.5, 2.0]
    assert plain.categories == ({"DE": 1, "FR": 1},)
    escaped = parse_block(b'"say ""hi""",1\nx"y,2\n', 2, [1], [0])
    assert escaped.categories == ({'say "hi"': 1, 'x"y': 1},)


DECIMAL = r"[+-]?[0-9]{0,21}(\.[0-9]{0,21})?([eE][+-]?[0-9]{1,3})?"
NUMBER_FORMATS = st.sampled_from(["{!r}", "{:.6g}", "{:.18e}", "{:.3f}", "{:.0f}", "{:.17g}"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
    NUMBER_FORMATS,
)
def test_csv_numbers_read_exactly_as_float_reads_them(values: list[float], form: str) -> None:
    texts = [form.format(v) for v in values]
    block = "".join(f"{t},x\n" for t in texts).encode()
    parsed = parse_block(block, 2, [0], []).numbers[:, 0]
    expected = np.array([float(t) for t in texts])
    assert np.array_equal(parsed, expected)
    assert np.array_equal(np.signbit(parsed), np.signbit(expected))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.from_regex(DECIMAL, fullmatch=True), min_size=1, max_size=100))
def test_any_decimal_reads_as_float_reads_it_or_is_refused(texts: list[str]) -> None:
    block = "".join(f"{t}\n" for t in texts).encode()
    try:
        expected = np.array([float(t) for t in texts])
    except ValueError:
        expected = np.array([np.nan])
    if not np.isfinite(expected).all():
        with pytest.raises(FieldProblem):
            parse_block(block, 1, [0], [])
    else:
        assert np.array_equal(parse_block(block, 1, [0], []).numbers[:, 0], expected)


@pytest.mark.parametrize(
    "text",
    ["717.3597142767394530", "75645772.87131654471", "7.061873871771897182", "9007199254740993"],
)
def test_decimals_whose_extended_precision_product_lands_halfway_still_read_exactly(
    text: str,
) -> None:
    """x87 rounds the first three to exactly halfway between two doubles, and a second
    rounding would then pick the even one, not float()'s; the last is a true tie."""
    assert parse_block(f"{text}\n".encode(), 1, [0], []).numbers[0, 0] == float(text)


def test_the_console_script_runs_as_a_module(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "t.csv", {"x": [float(v) for v in range(101)]})
    out = tmp_path / "ref.yaml"
    command = [sys.executable, "-m", "modelrollout.cli.main", "reference", "build", str(csv)]
    done = subprocess.run(
        [*command, "--features", "x", "-o", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[-1] == "x: [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]"
    )
    reference = parse_reference(yaml.safe_load(out.read_text())["data"]["reference.yaml"])
    assert reference.samples == 101
