"""Bad input to `reference build` and `psi` on pyarrow: every kind names the file, and
the row, line and column where it has one, exits 2, and writes nothing; and a sampled
file's edges are the quantiles of exactly the rows the seeded sample picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.cli import bins, csv_table
from modelrollout.cli import build as build_module
from modelrollout.cli.main import main
from modelrollout.reference import parse_reference
from testbed import free_port

KEPT = "an earlier reference, which a failed build must not touch\n"


def build(tmp_path: Path, data: Path, *options: str) -> tuple[int, str, str]:
    """`reference build` into an output file that already exists."""
    out = tmp_path / "out.yaml"
    out.write_text(KEPT)
    code = main(["reference", "build", str(data), "-o", str(out), *options])
    return code, out.read_text(), str(data.name)


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Path, *options: str) -> str:
    """The one-line error of a build that must fail, having written nothing."""
    code, kept, _ = build(tmp_path, data, *options)
    captured = capsys.readouterr()
    assert (code, captured.out, kept) == (2, "", KEPT)
    assert captured.err.startswith(f"modelrollout: error: {data.name}: ")
    assert captured.err.count("\n") == 1
    return captured.err.removeprefix("modelrollout: error: ").rstrip("\n")


def csv_file(tmp_path: Path, text: str | bytes, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


ROW_2 = "row 2 (line 3)"
A, K = ("--features", "a"), ("--categorical", "k")
A_2, K_2 = f"column 'a', {ROW_2}", f"column 'k', {ROW_2}"


@pytest.mark.parametrize(
    ("body", "options", "expected"),
    [
        ('1,"x"\n"",y\n', A, f"{A_2}: missing value"),
        ("1,x\n   ,y\n", A, f"{A_2}: missing value"),
        ("1,x\n2,\n", K, f"{K_2}: missing value"),
        ('1,x\n2,""\n', K, f"{K_2}: missing value"),
        ("1,x\n1_000,y\n", A, f"{A_2}: '1_000' is not a number"),
        ("1,x\n\u0661,y\n", A, f"{A_2}: '\u0661' is not a number"),
        (b"1,x\n\xff1,y\n", A, f"{A_2}: '\ufffd1' is not a number"),
        ("1,x\n1e999,y\n", A, f"{A_2}: '1e999' is not a finite number"),
        ("1,x\nInfinity,y\n", A, f"{A_2}: 'Infinity' is not a finite number"),
        ("1,x\n2\n", A, f"{ROW_2} has 1 fields; the header has 2"),
        ("1,x\n\n3,z\n", A, f"{A_2}: missing value"),
        (
            '1,x\n2,"y\nz"\n',
            A,
            "3 lines but 2 rows: a line break inside a quoted field is not supported",
        ),
    ],
)
def test_each_bad_csv_input_is_named_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: str | bytes,
    options: tuple[str, ...],
    expected: str,
) -> None:
    data = csv_file(tmp_path, b"a,k\n" + (body if isinstance(body, bytes) else body.encode()))
    assert refused(tmp_path, capsys, data, *options) == f"d.csv: {expected}"


def test_a_missing_column_is_named_in_csv_and_parquet_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as arrow  # the cli extra, a dev dependency: missing fails, never skips
    import pyarrow.parquet as parquet

    data = csv_file(tmp_path, "a,k\n1,x\n2,y\n")
    assert refused(tmp_path, capsys, data, "--features", "a,b", "--categorical", "k,z") == (
        "d.csv: no columns 'b', 'z'; it has: a, k"
    )
    parquet.write_table(arrow.table({"a": [1.0, 2.0]}), tmp_path / "d.parquet")
    assert refused(tmp_path, capsys, tmp_path / "d.parquet", "--features", "b") == (
        "d.parquet: no column 'b'; it has: a"
    )


def test_the_header_must_be_there_and_name_each_column_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = csv_file(tmp_path, "", "empty.csv")
    assert refused(tmp_path, capsys, empty, "--features", "a") == (
        "empty.csv: empty file, expected a header row"
    )
    twice = csv_file(tmp_path, "a,b,a\n1,2,3\n", "twice.csv")
    assert refused(tmp_path, capsys, twice, "--features", "b") == "twice.csv: the header repeats a"


def test_a_parquet_file_that_is_not_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = csv_file(tmp_path, "a\n1\n", "fake.parquet")
    assert refused(tmp_path, capsys, fake, "--features", "a").startswith(
        "fake.parquet: not a Parquet file: "
    )


@pytest.mark.parametrize("bad_row", [3, 2_500, 19_000])
@pytest.mark.parametrize("sampled", [False, True])
def test_a_bad_value_is_found_in_the_sample_pass_and_in_the_counting_pass(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bad_row: int,
    sampled: bool,
) -> None:
    """Small blocks and a small sample, so the bad row lies deep in a multi-threaded
    read; whether the sample holds it or only the count pass meets it, the same error."""
    monkeypatch.setattr(csv_table, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(build_module, "SAMPLE_VALUES", 2_000)
    rows = 20_000
    chosen = set(build_module.sample_rows(rows, 2).tolist())
    row = next(r for r in range(bad_row, rows) if (r in chosen) == sampled)
    lines = [f"{i},{i % 7}" for i in range(rows)]
    lines[row] = f"{row},7x"
    data = csv_file(tmp_path, "a,b\n" + "\n".join(lines) + "\n")
    assert refused(tmp_path, capsys, data, "--features", "a,b") == (
        f"d.csv: column 'b', row {row + 1} (line {row + 2}): '7x' is not a number"
    )


def test_psi_of_bad_data_prints_nothing_but_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = csv_file(tmp_path, "a\n" + "\n".join(str(i) for i in range(100)) + "\n", "t.csv")
    out = tmp_path / "ref.yaml"
    assert main(["reference", "build", str(train), "--features", "a", "-o", str(out)]) == 0
    capsys.readouterr()
    today = csv_file(tmp_path, "a\n1\nnan\n", "today.csv")
    assert main(["psi", "--reference", str(out), str(today)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "modelrollout: error: today.csv: column 'a', row 2 (line 3): 'nan' is not a finite number\n"
    )


def test_sampled_edges_are_the_quantiles_of_exactly_the_seeded_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference a big file gives is fixed by the data alone: the same seeded rows
    as before pyarrow, the same quantiles, so the same edges to the last bit."""
    monkeypatch.setattr(csv_table, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(build_module, "SAMPLE_VALUES", 3_000)
    rng = np.random.default_rng(5)
    values = np.column_stack([rng.normal(0, 1, 30_000), rng.lognormal(0, 1, 30_000)])
    text = "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in values)
    data = csv_file(tmp_path, f"a,b\n{text}")  # no final line break either
    assert build(tmp_path, data, "--features", "a,b")[0] == 0
    capsys.readouterr()
    manifest = yaml.safe_load((tmp_path / "out.yaml").read_text())
    reference = parse_reference(manifest["data"]["reference.yaml"])
    picked = values[build_module.sample_rows(30_000, 2)]
    for j, feature in enumerate(reference.features):
        assert feature.edges == tuple(build_module.quantile_edges(picked[:, j], 10).tolist())
    assert reference.samples == 30_000


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200, unique=True),
)
def test_bin_counts_by_comparison_and_by_binary_search_agree(
    values: list[float], edges: list[float]
) -> None:
    numbers, sorted_edges = np.array(values), np.array(sorted(edges))
    expected = np.bincount(
        np.searchsorted(sorted_edges, numbers, side="left"), minlength=sorted_edges.size + 1
    )
    assert bins.le_counts(numbers, sorted_edges).tolist() == expected.tolist()


def test_capture_without_a_prometheus_there_says_so_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.yaml"
    out.write_text(KEPT)
    port = free_port()  # nothing listens there
    code = main([
        "reference", "capture", "--prometheus", f"http://127.0.0.1:{port}", "--window", "7d",
        "--histogram", "model_feature_value", "--features", "amount",
        "--namespace", "shop", "--deployment", "v7", "-o", str(out),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert (code, captured.out, out.read_text()) == (2, "", KEPT)
    assert captured.err.startswith(f"modelrollout: error: Prometheus at http://127.0.0.1:{port}: ")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--window", "7 days"), "argument --window: expected a PromQL duration"),
        (("--window", "7d", "--deployment", "v7"), "--selector: unknown variable {{namespace}}"),
        (("--window", "7d", "--namespace", "shop", "--deployment", "v7", "--categorical", "k"),
         "these options make no drift gate: categorical.counter"),
    ],
)  # fmt: skip
def test_capture_options_that_make_no_query_are_refused(
    capsys: pytest.CaptureFixture[str], options: tuple[str, ...], expected: str
) -> None:
    argv = ["reference", "capture", "--prometheus", "http://127.0.0.1:9", "--histogram", "h"]
    try:
        code = main([*argv, "--features", "a", *options])
    except SystemExit as exited:  # argparse's own refusals
        code = int(exited.code or 0)
    assert code == 2
    assert expected in capsys.readouterr().err
