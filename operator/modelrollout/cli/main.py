"""modelrollout: build a drift reference from training data or from the stable model's
live histograms, and check data against one.

  modelrollout reference build train.csv --features age,income --categorical country \\
      --score score -o reference.yaml
  modelrollout reference capture --prometheus http://prometheus:9090 --window 7d \\
      --histogram model_feature_value --features age,income \\
      --namespace prod --deployment ranker-v7 -o reference.yaml
  modelrollout psi --reference reference.yaml today.parquet
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import yaml

from modelrollout.api.spec import DEFAULT_DRIFT_SELECTOR
from modelrollout.cli.build import Request, build
from modelrollout.cli.csv_table import CsvTable
from modelrollout.cli.parquet_table import ParquetTable
from modelrollout.cli.table import DataProblem, Table
from modelrollout.reference import CONFIG_MAP_KEY, Reference, ReferenceProblem, config_map

BAD_INPUT = 2
DEFAULT_NAME = "drift-reference"
PARQUET_SUFFIXES = (".parquet", ".pq")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
CONFIG_MAP_KEY_PATTERN = re.compile(r"[-._a-zA-Z0-9]+")
PROMQL_DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return BAD_INPUT
    try:
        return run(args)
    except (DataProblem, ReferenceProblem, OSError, UnicodeDecodeError) as error:
        print(f"modelrollout: error: {' '.join(str(error).split())}", file=sys.stderr)
        return BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelrollout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(metavar="COMMAND")
    reference = commands.add_parser("reference", help="drift references").add_subparsers(
        metavar="COMMAND", required=True
    )
    build_command = reference.add_parser(
        "build",
        help="a reference (ConfigMap manifest) from training data",
        description="Bin edges at the quantiles of each numeric column and every column's "
        "proportions, as a ConfigMap for the drift gate. Prints the edges, for the model "
        "server's Prometheus histograms.",
    )
    build_command.add_argument("data", type=Path, metavar="DATA", help="a .csv or .parquet file")
    build_command.add_argument(
        "--features", type=_names, default=(), metavar="A,B", help="numeric feature columns"
    )
    build_command.add_argument(
        "--categorical", type=_names, default=(), metavar="X,Y", help="categorical columns"
    )
    build_command.add_argument("--score", metavar="COLUMN", help="the prediction score column")
    build_command.add_argument(
        "--bins", type=_bins, default=10, help="quantile bins per numeric column (default 10)"
    )
    _output_options(build_command)
    build_command.set_defaults(run=_build)

    capture_command = reference.add_parser(
        "capture",
        help="a reference (ConfigMap manifest) from the stable's histograms in Prometheus",
        description="The stable model's feature histograms (and categories, and scores) "
        "over a window, read with the drift gate's own queries, as the ConfigMap `build` "
        "writes: what production looked like before the rollout.",
    )
    capture_command.add_argument("--prometheus", required=True, metavar="URL")
    capture_command.add_argument(
        "--histogram", required=True, metavar="NAME", help="the gate's histogram (feature label)"
    )
    capture_command.add_argument("--features", type=_names, required=True, metavar="A,B")
    capture_command.add_argument("--categorical", type=_names, default=(), metavar="X,Y")
    capture_command.add_argument(
        "--categorical-counter", metavar="NAME", help="the gate's counter of categories"
    )
    capture_command.add_argument("--category-label", default="category", metavar="LABEL")
    capture_command.add_argument("--score-histogram", metavar="NAME")
    capture_command.add_argument("--namespace", default="", help="fills {{namespace}}")
    capture_command.add_argument(
        "--deployment", default="", help="the stable's Deployment: fills {{target.deployment}}"
    )
    capture_command.add_argument(
        "--selector", default=DEFAULT_DRIFT_SELECTOR, help=f"the gate's ({DEFAULT_DRIFT_SELECTOR})"
    )
    capture_command.add_argument(
        "--window", type=_window, required=True, help="a PromQL duration: 7d, 12h"
    )
    capture_command.add_argument(
        "--at", metavar="TIME", help="the window's end: RFC 3339 or Unix seconds (default: now)"
    )
    capture_command.add_argument("--timeout", type=float, default=30.0, help="seconds a query")
    _output_options(capture_command)
    capture_command.set_defaults(run=_capture)

    psi_command = commands.add_parser(
        "psi",
        help="PSI of data against a reference",
        description="PSI per feature of DATA against the reference, as the drift gate "
        "computes it, and their aggregate. Bands: stable up to 0.1, warn up to 0.25, drift.",
    )
    psi_command.add_argument("data", type=Path, metavar="DATA", help="a .csv or .parquet file")
    psi_command.add_argument(
        "--reference",
        type=Path,
        required=True,
        metavar="FILE",
        help="a ConfigMap manifest from `reference build`, or a bare reference",
    )
    psi_command.add_argument("--key", default=CONFIG_MAP_KEY, help="the ConfigMap's data key")
    psi_command.add_argument(
        "--aggregate", choices=["mean", "max"], default="mean", help="over features (mean)"
    )
    psi_command.add_argument("--json", action="store_true", help="print JSON")
    psi_command.set_defaults(run=_psi)
    return parser


def _output_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--name", type=_dns_name, default=DEFAULT_NAME, help=f"ConfigMap name ({DEFAULT_NAME})"
    )
    command.add_argument(
        "--key", type=_key, default=CONFIG_MAP_KEY, help=f"ConfigMap key ({CONFIG_MAP_KEY})"
    )
    command.add_argument(
        "-o", "--output", default="-", metavar="FILE", help="where to write (default -: stdout)"
    )


def _build(args: argparse.Namespace) -> int:
    if not args.features and not args.categorical:
        raise DataProblem("name the columns: --features and/or --categorical")
    reference = build(
        open_table(args.data), Request(args.features, args.categorical, args.score, args.bins)
    )
    return _write(args, reference, f"{reference.samples} rows of {args.data.name}")


def _capture(args: argparse.Namespace) -> int:
    from modelrollout.cli.capture import Capture, capture, drift_gate, selector

    gate = drift_gate(args)
    request = Capture(args.prometheus, gate, selector(args), args.window, args.at, args.timeout)
    reference = capture(request)
    return _write(args, reference, f"{reference.samples} observations over {args.window}")


def _write(args: argparse.Namespace, reference: Reference, what: str) -> int:
    text = yaml.dump(config_map(args.name, reference, args.key), Dumper=_Dumper, sort_keys=False)
    if args.output == "-":
        sys.stdout.write(text)
        notes = sys.stderr
    else:
        write_whole(Path(args.output), text)
        notes = sys.stdout
        print(f"wrote {args.output}: ConfigMap {args.name}, key {args.key}, {what}", file=notes)
    _print_buckets(reference, notes)
    return 0


def _print_buckets(reference: Reference, out: TextIO) -> None:
    """Each distribution's edges (or categories) as YAML flow lists, to paste into the
    model server's histogram definitions."""
    print("# histogram buckets (le) per feature:", file=out)
    distributions = [*reference.features, *filter(None, [reference.score])]
    for d in distributions:
        note = ""
        if d is reference.score:
            note = "  # prediction score"
        elif d.categories is not None:
            note = "  # categories"
        if d.edges is not None and sum(p > 0 for p in d.proportions) < 2:
            note = "  # a single value in the data: only values above it will show"
        print(f"{d.name}: {json.dumps(list(d.edges or d.categories or ()))}{note}", file=out)


def _psi(args: argparse.Namespace) -> int:
    # Imported here: core.drift brings scipy.stats, most of a second that build never needs.
    from modelrollout.cli.psi import compare, load_reference, report, table_lines

    results = compare(open_table(args.data), load_reference(args.reference, args.key))
    if args.json:
        print(json.dumps(report(results, args.aggregate), indent=2))
    else:
        print("\n".join(table_lines(results, args.aggregate)))
    return 0


def write_whole(path: Path, text: str) -> None:
    """All of it or nothing: a temporary file beside `path`, renamed over it."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as out:
        try:
            out.write(text)
        except BaseException:
            Path(out.name).unlink()
            raise
    Path(out.name).replace(path)


def open_table(path: Path) -> Table:
    """A Parquet file by its suffix, else a CSV file."""
    if not path.is_file():
        raise DataProblem(f"{path}: no such file")
    return ParquetTable(path) if path.suffix.lower() in PARQUET_SUFFIXES else CsvTable(path)


class _Dumper(yaml.SafeDumper):
    """safe_dump's dumper, writing multi-line strings (the reference) as literal blocks."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, "|" if "\n" in value else None)


_Dumper.add_representer(str, _literal)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def _bins(text: str) -> int:
    if not text.isdigit() or not 2 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 2 to 1000, got {text!r}")
    return int(text)


def _window(text: str) -> str:
    if not PROMQL_DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a PromQL duration such as 7d or 12h, got {text!r}"
        )
    return text


def _dns_name(text: str) -> str:
    if len(text) > 253 or not DNS_SUBDOMAIN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid ConfigMap name")
    return text


def _key(text: str) -> str:
    if len(text) > 253 or not CONFIG_MAP_KEY_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid ConfigMap key")
    return text


if __name__ == "__main__":
    sys.exit(main())
