"""ModelRollout status: all progress lives here, so a restarted operator resumes
exactly where the last one stopped.

Conditions follow kstatus (Ready, Reconciling, Stalled) so that Flux, Argo CD and
`kubectl wait` understand the resource without custom code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, PlainSerializer, TypeAdapter

from modelrollout.api.base import StatusModel

Phase = Literal[
    "Pending", "Progressing", "Paused", "Succeeded", "RollingBack", "RolledBack", "Failed"
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "RolledBack", "Failed"})
HISTORY_LIMIT = 50


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# A point in time, timezone-aware in Python and RFC 3339 on the wire.
Timestamp = Annotated[AwareDatetime, PlainSerializer(format_timestamp, when_used="json")]
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 time from the API (metadata, Events), read as status reads its own."""
    return _TIMESTAMP.validate_python(text)


Verdict = Literal["pass", "fail", "abort", "nodata", "error", "inconclusive"]
NoDataKind = Literal["empty", "nan", "inf", "multiple-series"]
DriftVerdict = Literal["stable", "warn", "drift", "inconclusive", "nodata", "invalid"]


class Condition(StatusModel):
    """A kstatus-style condition."""

    type: str = Field(max_length=316, description="Ready, Reconciling, Stalled, or another.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="One CamelCase word saying why.")
    message: str = Field("", max_length=32768, description="What happened, for a person.")
    last_transition_time: Timestamp = Field(
        description="When the status last changed.",
    )
    observed_generation: int = Field(
        0, ge=0, description="metadata.generation this condition was computed from."
    )


class ThresholdStatus(StatusModel):
    """Bounds as they were applied."""

    min: float | None = Field(None, description="Lowest acceptable value.")
    max: float | None = Field(None, description="Highest acceptable value.")


class MetricStatus(StatusModel):
    """The last verdict on one metric."""

    name: str = Field(description="The metric's name from spec.analysis.metrics.")
    value: float | None = Field(None, description="Last value read, if there was one.")
    no_data: NoDataKind | None = Field(
        None,
        description="Why the last result was not a value: empty, nan, inf or multiple-series.",
    )
    slo: ThresholdStatus | None = Field(None, description="SLO bounds applied.")
    abort: ThresholdStatus | None = Field(None, description="Abort bounds applied.")
    verdict: Verdict = Field(
        description="pass, fail, abort, nodata, error or inconclusive (comparison only)."
    )
    consecutive_failures: int = Field(0, ge=0, description="Failed checks in a row this stage.")
    stage: int = Field(0, ge=0, description="Stage the check ran in (1-based).")
    checked_at: Timestamp = Field(description="When it was checked.")
    p_value: float | None = Field(None, description="Comparison: Mann-Whitney p-value.")
    effect: float | None = Field(
        None, description="Comparison: candidate mean divided by stable mean."
    )
    message: str | None = Field(None, max_length=4096, description="Detail, for a person.")


class SamplesStatus(StatusModel):
    """How far the stage is towards minSamples."""

    count: float = Field(0, description="Candidate requests since the stage began.")
    required: int | None = Field(None, description="minSamples of the stage.")
    rate_per_second: float | None = Field(None, description="Current request rate.")
    eta_seconds: float | None = Field(
        None, description="Estimated seconds until minSamples at the current rate."
    )


class FeatureDrift(StatusModel):
    """PSI of one feature (or of the scores)."""

    feature: str = Field(description="Feature name, or the score histogram.")
    psi: float | None = Field(None, description="Population stability index.")
    critical_value: float | None = Field(
        None,
        description="The PSI above which this gap is beyond chance at the check's confidence "
        "(by the G test; about (1/n + 1/m) chi2 quantile with enough samples per bin).",
    )
    candidate_samples: float | None = Field(None, description="Candidate observations.")
    reference_samples: float | None = Field(None, description="Reference observations.")
    verdict: DriftVerdict = Field(
        description="stable, warn, drift, inconclusive (too few samples), nodata or invalid "
        "(bins differ from the reference)."
    )


class DriftStatus(StatusModel):
    """The drift gate's last verdict."""

    aggregate: float | None = Field(None, description="Mean or max of per-feature PSI.")
    critical_value: float | None = Field(
        None,
        description="The aggregate's no-drift critical value: drift counts only beyond it.",
    )
    enforced: bool = Field(True, description="false: observe-only, never blocks.")
    stage: int = Field(0, ge=0, description="The stage it was checked at.")
    looks: int = Field(
        0,
        ge=0,
        description="Conclusive checks so far in this stage; each look spends part of "
        "1 - confidence, so repeated checks do not compound false alarms.",
    )
    verdict: DriftVerdict = Field(
        description="stable, warn, drift, inconclusive (too few samples), nodata or invalid "
        "(bins differ from the reference)."
    )
    features: list[FeatureDrift] = Field(
        default_factory=list, max_length=65, description="Per-feature PSI."
    )
    checked_at: Timestamp = Field(description="When it was checked.")
    message: str | None = Field(None, max_length=4096, description="Detail, for a person.")


CheckPoint = Literal["preRollout", "prePromotion", "postPromotion"]
CheckPhase = Literal["Running", "Succeeded", "Failed"]


class KpiStatus(StatusModel):
    """One KPI a Job reported, as judged."""

    name: str = Field(max_length=63, description="The KPI's name.")
    value: float | None = Field(None, description="The value reported; unset if none.")
    verdict: Literal["pass", "fail"] = Field(description="pass or fail.")


class CheckStatus(StatusModel):
    """One gate check in this run."""

    point: CheckPoint = Field(description="preRollout, prePromotion or postPromotion.")
    name: str = Field(max_length=40, description="The check's name from spec.checks.")
    phase: CheckPhase = Field(description="Running, Succeeded or Failed.")
    attempt: int = Field(1, ge=1, description="Attempt number, 1-based.")
    started_at: Timestamp = Field(description="When this attempt began.")
    finished_at: Timestamp | None = Field(None, description="When it ended.")
    job: str | None = Field(None, max_length=63, description="The Job of a job check.")
    message: str = Field("", max_length=1024, description="What happened, for a person.")
    kpis: list[KpiStatus] = Field(default_factory=list, max_length=20, description="KPIs.")


class ReceiverStatus(StatusModel):
    """How notifications to one receiver are doing, since the operator started."""

    receiver: str = Field(max_length=300, description="The receiver's name.")
    delivered: int = Field(0, ge=0, description="Notifications delivered.")
    failed: int = Field(0, ge=0, description="Notifications given up on after retries.")
    last_error: str | None = Field(None, max_length=1024, description="The last failure.")
    last_success: Timestamp | None = Field(None, description="When one was last delivered.")


class HistoryEntry(StatusModel):
    """One transition, with the numbers that caused it."""

    time: Timestamp = Field(description="When.")
    from_phase: str = Field(alias="from", description="Phase before.")
    to_phase: str = Field(alias="to", description="Phase after.")
    stage: int = Field(0, ge=0, description="Stage number after the transition (1-based).")
    weight: int = Field(0, ge=0, le=100, description="Candidate weight after the transition.")
    reason: str = Field(max_length=1024, description="One CamelCase word.")
    message: str = Field("", max_length=4096, description="What happened, with its numbers.")


class ModelRolloutStatus(StatusModel):
    """Where the rollout is, and why."""

    phase: Phase = Field(
        "Pending",
        description="Pending, Progressing, Paused, Succeeded, RollingBack, RolledBack or Failed.",
    )
    stage: int = Field(0, ge=0, description="Current stage, 1-based; 0 before the first.")
    stage_count: int = Field(0, ge=0, description="Number of stages.")
    weight: int = Field(0, ge=0, le=100, description="Candidate's declared weight, percent.")
    effective_weight: float | None = Field(
        None,
        description="Weight actually achieved (replicas router: the replica ratio), percent.",
    )
    mirroring: bool = Field(False, description="Whether stable traffic is mirrored now.")
    stage_started_at: Timestamp | None = Field(None, description="When this stage began.")
    observed_generation: int = Field(
        0, ge=0, description="metadata.generation this status was computed from."
    )
    rollout_generation: int = Field(
        0,
        ge=0,
        description="metadata.generation this rollout run started from; a new generation "
        "starts again from stage 1.",
    )
    target_hash: str | None = Field(
        None,
        max_length=64,
        description="Digest of the targets, routing and stages this run started with; a "
        "change starts a new run.",
    )
    total_replicas: int | None = Field(
        None, ge=0, description="replicas router: the fleet shared by stable and candidate."
    )
    preparing_weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description="replicas router: the weight the candidate keeps replicas for while the "
        "other side grows: the next stage's while the candidate is made ready for it, the "
        "last stage's while the stable grows back after a rollback.",
    )
    weight_confirmed: bool = Field(
        False, description="The routing object was seen carrying the current weight."
    )
    manual_pause: bool = Field(False, description="Paused by the pause action.")
    approved_stage: int = Field(
        0, ge=0, description="Last stage approved with the promote action (1-based)."
    )
    finished_at: Timestamp | None = Field(
        None,
        description="When the rollout reached Succeeded or RolledBack.",
    )
    scaled_down: bool = Field(
        False, description="The delayed scale-down after the end has been done."
    )
    stage_summary: str = Field("0/0", max_length=16, description="Stage as 2/4.")
    weight_summary: str = Field("0%", max_length=32, description="Weight as 25%.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Reconciling and Stalled (kstatus), and others.",
    )
    analysis: list[MetricStatus] = Field(
        default_factory=list, max_length=21, description="Last verdict per metric."
    )
    analysis_errors: int = Field(
        0,
        ge=0,
        description="Consecutive analysis ticks without data (Prometheus unreachable, an "
        "error, or no sample); noDataPolicy applies at errorLimit.",
    )
    samples: SamplesStatus | None = Field(None, description="Progress towards minSamples.")
    drift: DriftStatus | None = Field(None, description="The drift gate's last verdict.")
    checks: list[CheckStatus] = Field(
        default_factory=list, max_length=30, description="The gate checks of this run."
    )
    notifications: list[ReceiverStatus] = Field(
        default_factory=list,
        max_length=20,
        description="This rollout's receivers, and the operator's that are failing.",
    )
    transitions: int = Field(
        0, ge=0, description="Transitions so far: the sequence number of the last one."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} transitions, oldest first.",
    )
    message: str = Field("", max_length=4096, description="What the rollout is doing now.")
