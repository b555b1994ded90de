"""The operator's own metrics, for alerts and dashboards.

Labels are bounded by what users declare: rollouts, their metric names, features,
phases and reasons; never per request or per time. Gauges follow each rollout's
status as the operator sees it (every rollout, driven or finished) and are removed
when the rollout is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelrollout.api.status import MetricStatus, Phase

REGISTRY = CollectorRegistry()
ROLLOUT = ["namespace", "name"]
PHASES: tuple[str, ...] = get_args(Phase)

INFO = Gauge("modelrollout_info", "The operator's version", ["version"], registry=REGISTRY)
LEADER = Gauge(
    "modelrollout_leader",
    "1 while this replica holds the leader-election Lease (with --leader-election)",
    registry=REGISTRY,
)
PHASE = Gauge(
    "modelrollout_phase",
    "1 for the rollout's current phase",
    [*ROLLOUT, "phase"],
    registry=REGISTRY,
)
STAGE = Gauge("modelrollout_stage", "Current stage, 1-based; 0 before", ROLLOUT, registry=REGISTRY)
WEIGHT = Gauge("modelrollout_weight", "Candidate weight, percent", ROLLOUT, registry=REGISTRY)
ANALYSIS_UNAVAILABLE = Gauge(
    "modelrollout_analysis_unavailable",
    "1 while the analysis cannot read Prometheus",
    ROLLOUT,
    registry=REGISTRY,
)
DRIFT_PSI = Gauge(
    "modelrollout_drift_psi", "Last PSI per feature", [*ROLLOUT, "feature"], registry=REGISTRY
)
CHECKS = Counter(
    "modelrollout_analysis_checks",
    "Analysis checks by metric and verdict",
    [*ROLLOUT, "metric", "verdict"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "modelrollout_rollbacks", "Rollbacks by reason", [*ROLLOUT, "reason"], registry=REGISTRY
)
RECONCILE = Histogram(
    "modelrollout_reconcile_duration_seconds",
    "One reconcile pass, observe to act",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
TICK_LAG = Histogram(
    "modelrollout_tick_lag_seconds",
    "How late a rollout's pass started after it was due (passes woken early by a change "
    "are not counted): the operator keeping up with its rollouts",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
KUBE_READS = Counter(
    "modelrollout_kube_reads",
    "Objects read from the API server by kind; objects the operator watches are read "
    "only when the watch has reported a change, so at rest this stays flat",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "modelrollout_reconcile_errors", "Reconcile passes that raised", registry=REGISTRY
)
QUERY = Histogram(
    "modelrollout_prometheus_query_duration_seconds",
    "Queries to the analysis' Prometheus",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
GROUPED_ANSWERS = Counter(
    "modelrollout_prometheus_grouped_answers",
    "Rollouts' queries answered by one query shared with other rollouts",
    registry=REGISTRY,
)
QUERY_ERRORS = Counter(
    "modelrollout_prometheus_query_errors",
    "Queries that failed (unreachable, 5xx) or were refused (bad PromQL)",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("failed", "rejected"):
    QUERY_ERRORS.labels(_kind)

# Notifications (modelrollout.notify): per receiver name, which the operator's admin
# or a rollout declares, so the labels stay bounded.
NOTIFICATIONS = Counter(
    "modelrollout_notifications",
    "Notifications by receiver and result: delivered, failed (after its retries) or "
    "dropped (a full queue, or the operator stopping)",
    ["receiver", "result"],
    registry=REGISTRY,
)
NOTIFICATION_QUEUE = Gauge(
    "modelrollout_notification_queue_length",
    "Notifications waiting for a receiver, the one in flight not included",
    ["receiver"],
    registry=REGISTRY,
)


def serve(port: int) -> None:
    """Serve /metrics on `port` (0: do not serve)."""
    try:
        release = version("modelrollout")
    except PackageNotFoundError:
        release = "unknown"
    INFO.labels(release).set(1)
    if port:
        start_http_server(port, registry=REGISTRY)


_drift_features: dict[tuple[str, str], set[str]] = {}  # the DRIFT_PSI series of each rollout


def record_state(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Gauges from the rollout's status as stored."""
    current = status.get("phase") or "Pending"
    for phase in PHASES:
        PHASE.labels(namespace, name, phase).set(1 if phase == current else 0)
    STAGE.labels(namespace, name).set(int(status.get("stage") or 0))
    WEIGHT.labels(namespace, name).set(int(status.get("weight") or 0))
    conditions = status.get("conditions") or []
    blind = any(
        c.get("type") == "AnalysisUnavailable" and c.get("status") == "True" for c in conditions
    )
    ANALYSIS_UNAVAILABLE.labels(namespace, name).set(1 if blind else 0)
    features = (status.get("drift") or {}).get("features") or []
    psi = {str(f["feature"]): f["psi"] for f in features if f.get("psi") is not None}
    # only this rollout's own features: a scan of every rollout's series here would
    # cost O(rollouts) on each stored version, O(rollouts^2) a tick at scale
    for gone in _drift_features.get((namespace, name), set()) - psi.keys():
        DRIFT_PSI.remove(namespace, name, gone)
    for feature, value in psi.items():
        DRIFT_PSI.labels(namespace, name, feature).set(value)
    _drift_features[(namespace, name)] = set(psi)


def record_pass(
    namespace: str,
    name: str,
    checks: Sequence[MetricStatus] | None,
    rolled_back: str | None,
) -> None:
    """Counters for what one pass did: its checks, and a rollback it started."""
    for check in checks or ():
        CHECKS.labels(namespace, name, check.name, check.verdict).inc()
    if rolled_back is not None:
        ROLLBACKS.labels(namespace, name, rolled_back).inc()


def forget(namespace: str, name: str) -> None:
    """A deleted rollout's series go with it."""
    for metric in (PHASE, STAGE, WEIGHT, ANALYSIS_UNAVAILABLE, DRIFT_PSI, CHECKS, ROLLBACKS):
        _remove(metric, namespace, name)
    _drift_features.pop((namespace, name), None)


def forget_states() -> None:
    """A replica that pauses in favour of a peer stops describing rollouts: its last
    view would freeze there and keep alerts such as PausedTooLong firing. The active
    replica reports them; the counters stay, as they only ever count this replica."""
    for metric in (PHASE, STAGE, WEIGHT, ANALYSIS_UNAVAILABLE, DRIFT_PSI):
        metric.clear()
    _drift_features.clear()


@contextmanager
def timed(histogram: Histogram) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started)


def _remove(metric: Gauge | Counter, namespace: str, name: str) -> None:
    for labels in list(_label_sets(metric)):
        if labels[:2] == (namespace, name):
            metric.remove(*labels)


def _label_sets(metric: Gauge | Counter) -> list[tuple[str, ...]]:
    return [tuple(labels) for labels in metric._metrics]  # children by label values
