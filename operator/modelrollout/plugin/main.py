"""kubectl modelrollout: see, drive and lint ModelRollouts.

  kubectl modelrollout get                      every rollout in the namespace
  kubectl modelrollout status ranker --watch    stages, checks, drift, events
  kubectl modelrollout promote ranker           end a pause or an approval
  kubectl modelrollout history ranker           every transition, with its numbers
  kubectl modelrollout timeline ranker -o t.png the weight over time, as a chart
  kubectl modelrollout lint rollout.yaml        offline, with the CRD's rules

Errors, refusals and lint problems exit 1, and a refused action writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live

from modelrollout.plugin import actions, lint, views
from modelrollout.plugin.kube import Cluster, PluginError

PROG = "kubectl modelrollout"
FAILED, INTERRUPTED = 1, 130
WIDE_DEFAULT = 160
Command = Callable[[argparse.Namespace, Console], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = _console()
    try:
        run: Command = args.run
        return run(args, console)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED


def _console() -> Console:
    """Colour and the terminal's width on a terminal; wide plain text in a pipe, so
    that nothing a script greps for is cut short."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=WIDE_DEFAULT if piped else None, highlight=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster.connect(args.kubeconfig, args.context, args.namespace)


# -- commands -----------------------------------------------------------------------------


def _get(args: argparse.Namespace, console: Console) -> int:
    cluster = _cluster(args)
    if args.name:
        rollouts = [cluster.rollout(args.name)]
    else:
        rollouts = cluster.rollouts(all_namespaces=args.all_namespaces)
    if not rollouts:
        where = "any namespace" if args.all_namespaces else f"namespace {cluster.namespace}"
        print(f"No modelrollouts found in {where}.", file=sys.stderr)
        return 0
    console.print(views.rollouts_table(rollouts, _now(), args.all_namespaces))
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    cluster = _cluster(args)

    def view() -> tuple[Group, bool]:
        rollout = cluster.rollout(args.name)
        return views.status_view(rollout, cluster.events(rollout), _now()), views.terminal(rollout)

    shown, done = view()
    if not args.watch:
        console.print(shown)
        return 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    with Live(shown, console=console, auto_refresh=False) as live:
        while not done and (deadline is None or time.monotonic() < deadline):
            time.sleep(args.interval)
            shown, done = view()
            live.update(shown, refresh=True)
    return 0


def _action(name: str) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        action = "promote-full" if name == "promote" and args.full else name
        rollout, replaced = actions.apply(_cluster(args), args.name, action)
        if replaced and replaced != action:
            console.print(f"note: replaced the pending action {replaced!r}, not yet taken")
        console.print(
            f"modelrollout.rollouts.mlops.io/{rollout.name} annotated: {action} "
            f"(was {rollout.status.phase}); the operator takes it on its next pass"
        )
        return 0

    return run


def _history(args: argparse.Namespace, console: Console) -> int:
    rollout = _cluster(args).rollout(args.name)
    if not rollout.status.history:
        print(f"modelrollout {rollout.name} has no transitions yet.", file=sys.stderr)
        return 0
    console.print(views.history_table(rollout))
    return 0


def _timeline(args: argparse.Namespace, console: Console) -> int:
    from modelrollout.plugin import timeline  # matplotlib takes a while to import

    rollout = _cluster(args).rollout(args.name)
    path = timeline.render(rollout, Path(args.output), _now())
    width, height = timeline.size(rollout)
    console.print(f"wrote {path} ({width}x{height}): {timeline.LIMITATION}")
    return 0


def _lint(args: argparse.Namespace, console: Console) -> int:
    return lint.lint(args.files, sys.stdout)


# -- arguments ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _connection(parser, None)
    shared = argparse.ArgumentParser(add_help=False)
    _connection(shared, argparse.SUPPRESS)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[shared], help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    get = command("get", _get, "list rollouts: phase, stage, weight, drift, age")
    get.add_argument("name", nargs="?", metavar="NAME")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")

    status = command("status", _status, "one rollout in detail, with its recent events")
    status.add_argument("name", metavar="NAME")
    status.add_argument("-w", "--watch", action="store_true", help="refresh until it ends")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between reads")
    status.add_argument(
        "--timeout", type=float, default=0, help="with --watch: stop after this many seconds"
    )

    for name, help in (
        ("promote", "end a pause or an approval (--full: to 100%% at once)"),
        ("abort", "roll back now"),
        ("retry", "start a rolled-back or failed rollout again"),
        ("pause", "hold the rollout at its weight"),
        ("resume", "end a pause set by the pause action"),
    ):
        sub = command(name, _action(name), help)
        sub.add_argument("name", metavar="NAME")
        if name == "promote":
            sub.add_argument("--full", action="store_true", help="skip to the last stage")

    history = command("history", _history, "the recorded transitions")
    history.add_argument("name", metavar="NAME")

    chart = command("timeline", _timeline, "a PNG of the weight over time and the checks")
    chart.add_argument("name", metavar="NAME")
    chart.add_argument("-o", "--output", default="timeline.png", metavar="FILE")

    check = command("lint", _lint, "validate manifests offline (- reads stdin)")
    check.add_argument("files", nargs="+", metavar="FILE")
    return parser


def _connection(parser: argparse.ArgumentParser, default: object) -> None:
    """kubectl's connection flags, accepted before and after the command."""
    parser.add_argument("-n", "--namespace", default=default, help="the namespace")
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig")
    parser.add_argument("--context", default=default, help="the kubeconfig context")


if __name__ == "__main__":
    sys.exit(main())
