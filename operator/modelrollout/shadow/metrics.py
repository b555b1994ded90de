"""What the comparator counts, in a registry of its own.

The match-rate gate reads `modelrollout_shadow_comparisons_total`: its three results
exist from the first scrape at 0, so `increase()` over a stage window is defined from
the start. Every other series explains the pairs that were not compared.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)

RESULTS = ("match", "mismatch", "error")
# Copies never sent to the candidate.
DROP_REASONS = ("in_flight_limit", "body_too_large")
# Pairs that had a candidate answer but no stable answer to compare it with.
UNCOMPARED_REASONS = (
    "stable_status",  # the stable answered non-2xx: nothing to agree with
    "stable_error",  # the stable did not answer (unreachable, timeout, client gone)
    "stable_too_large",  # the stable's answer is over --max-body
    "stable_encoding",  # a Content-Encoding other than gzip or deflate
    "stable_not_json",
    "stable_no_paths",  # no --compare path selects anything in the stable's answer
)
# Why the candidate's side of a pair is an "error".
CANDIDATE_ERRORS = ("timeout", "unreachable", "status", "too_large")
FOLLOW_ERRORS = ("forbidden", "unauthorized", "api_error", "unreachable", "not_found")


class ShadowMetrics:
    def __init__(self, rollout: str) -> None:
        self.registry = registry = CollectorRegistry()

        def by_reason(name: str, doc: str, reasons: tuple[str, ...]) -> dict[str, Counter]:
            """One counter, its label values all present from the start at 0."""
            counter = Counter(name, doc, ["rollout", "reason"], registry=registry)
            return {reason: counter.labels(rollout, reason) for reason in reasons}

        def of_rollout(kind: type[M], name: str, doc: str) -> M:
            """One series of `kind`, this rollout's."""
            return kind(name, doc, ["rollout"], registry=registry).labels(rollout)

        comparisons = Counter(
            "modelrollout_shadow_comparisons",
            "Shadowed requests by how the candidate's answer compared with the stable's",
            ["rollout", "result"],
            registry=registry,
        )
        self.comparisons = {result: comparisons.labels(rollout, result) for result in RESULTS}
        self.latency = of_rollout(
            Histogram,
            "modelrollout_shadow_candidate_latency_seconds",
            "Time to the candidate's whole answer (answered calls only; timeouts are errors)",
        )
        self.dropped = by_reason(
            "modelrollout_shadow_dropped", "Copies not sent to the candidate", DROP_REASONS
        )
        self.uncompared = by_reason(
            "modelrollout_shadow_uncompared",
            "Shadowed requests whose stable answer could not be compared",
            UNCOMPARED_REASONS,
        )
        self.candidate_errors = by_reason(
            "modelrollout_shadow_candidate_errors",
            "Candidate calls counted as result=error, by cause",
            CANDIDATE_ERRORS,
        )
        self.requests = of_rollout(
            Counter,
            "modelrollout_shadow_requests",
            "Requests answered through the comparator (shadowed or not)",
        )
        self.in_flight = of_rollout(
            Gauge, "modelrollout_shadow_in_flight", "Shadow calls under way"
        )
        self.share = of_rollout(
            Gauge, "modelrollout_shadow_share", "Fraction of requests copied to the candidate now"
        )
        self.follow_errors = by_reason(
            "modelrollout_shadow_follow_errors",
            "Failed reads of the ModelRollout (--follow-rollout)",
            FOLLOW_ERRORS,
        )
