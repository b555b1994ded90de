"""`python -m modelrollout`: run the operator against the current cluster."""

from __future__ import annotations

import argparse
import os
import socket
import sys

import kopf

from modelrollout import egress, telemetry
from modelrollout.controller.notifications import ENVIRONMENT as RECEIVERS_ENVIRONMENT
from modelrollout.controller.notifications import operator_receivers
from modelrollout.metrics.connections import SHARING_ENVIRONMENT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelrollout-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate replicas through this kopf peering object (else standalone)",
    )
    parser.add_argument(
        "--priority", type=int, default=0, help="peering priority; give each replica its own"
    )
    parser.add_argument(
        "--leader-election",
        metavar="LEASE",
        help="run only while holding this coordination.k8s.io Lease (replicas wait as "
        "standbys and take over within about 15s of a crash); else standalone or --peering",
    )
    parser.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease; default $POD_NAMESPACE or default",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="serve the operator's Prometheus metrics on this port (0: off); default 8080",
    )
    parser.add_argument(
        "--allowed-addresses",
        metavar="RULES",
        default=os.environ.get(egress.ENVIRONMENT, egress.DEFAULT),
        help="where outbound calls (Prometheus, webhooks, receivers) may go: comma-separated "
        "host patterns and CIDRs, e.g. '*.svc,10.0.0.0/8'; default $"
        f"{egress.ENVIRONMENT} or '{egress.DEFAULT}' (in-cluster Services only)",
    )
    parser.add_argument(
        "--receivers",
        metavar="FILE",
        default=os.environ.get(RECEIVERS_ENVIRONMENT),
        help="the operator's own notification receivers, told of every rollout: a YAML "
        "list of {name, type, url, events}; default $" + RECEIVERS_ENVIRONMENT,
    )
    parser.add_argument(
        "--query-sharing",
        choices=["on", "off"],
        default=os.environ.get(SHARING_ENVIRONMENT, "on"),
        help="ask Prometheus once for every rollout that shares a metric's template, "
        "grouped by its per-rollout labels (off: once per rollout); default $"
        f"{SHARING_ENVIRONMENT} or on",
    )
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default="json")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        egress.AddressPolicy.parse(args.allowed_addresses)
    except ValueError as error:
        print(f"modelrollout-operator: --allowed-addresses: {error}", file=sys.stderr)
        return 2
    os.environ[egress.ENVIRONMENT] = args.allowed_addresses  # read by the startup handler
    try:
        operator_receivers(args.receivers)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        print(f"modelrollout-operator: --receivers: {error}", file=sys.stderr)
        return 2
    if args.receivers:
        os.environ[RECEIVERS_ENVIRONMENT] = args.receivers
    os.environ[SHARING_ENVIRONMENT] = args.query_sharing
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    import modelrollout.controller.handlers  # noqa: F401  (registers the handlers)

    telemetry.serve(args.metrics_port)
    if args.leader_election:
        if args.peering:
            print(
                "modelrollout-operator: --leader-election or --peering, not both", file=sys.stderr
            )
            return 2
        _lead(args)

    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


def _lead(args: argparse.Namespace) -> None:
    """Block until this replica leads; from then on, losing the Lease ends the process
    before any other replica may write (see leader.py). A standby answers the liveness
    URL itself, so it is not restarted for waiting."""
    from modelrollout.kube.client import api_client_from_environment
    from modelrollout.leader import LeaderElection, standby_health

    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    election = LeaderElection(
        api_client_from_environment(), args.leader_election_namespace, args.leader_election,
        identity,
    )  # fmt: skip
    with standby_health(args.liveness):
        election.acquire()
    telemetry.LEADER.set(1)
    election.keep(lost=lambda: os._exit(LOST_LEASE_EXIT_CODE))


LOST_LEASE_EXIT_CODE = 75  # EX_TEMPFAIL: restart me; another replica leads now


if __name__ == "__main__":
    sys.exit(main())
