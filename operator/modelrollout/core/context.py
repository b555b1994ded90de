"""One frozen view of the stage being judged, built once per pass.

Every query template, the analysis and the drift gate read the same slice of the
spec, the same window and the same clock reading, so nothing downstream takes the
whole spec or reads the clock again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from modelrollout.api.durations import format_promql_duration, parse_duration
from modelrollout.api.spec import Analysis, DriftGate, ModelRolloutSpec, Stage
from modelrollout.api.status import ModelRolloutStatus


@dataclass(frozen=True)
class StageContext:
    """The stage under judgement: where, which, since when, and the template variables.

    `window` is the time since the stage began as a PromQL range, never shorter than
    the interval; `started` equals `now` before stage 1 (preflight)."""

    namespace: str
    analysis: Analysis
    drift_gate: DriftGate | None
    stage: Stage
    number: int
    started: datetime
    now: datetime
    window: str
    variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.analysis.interval).total_seconds()

    @property
    def window_seconds(self) -> float:
        return parse_duration(self.window).total_seconds()

    def for_side(self, side: str) -> Mapping[str, str]:
        """The variables with {{target.deployment}} set to one side's Deployment."""
        return {**self.variables, "target.deployment": self.variables[f"{side}.deployment"]}


def stage_context(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    namespace: str,
    now: datetime,
    *,
    rollout: str,
) -> StageContext:
    """The context of the current stage; before stage 1, of the first (preflight).
    Queries may also use {{rollout}}, the rollout's name (the shadow comparator's
    `rollout` label)."""
    assert spec.analysis is not None
    stages = spec.strategy.resolved_stages()
    number = max(status.stage, 1)
    started = status.stage_started_at if status.stage and status.stage_started_at else now
    interval = spec.analysis.interval
    window = window_for(started, now, parse_duration(interval).total_seconds())
    stage = stages[number - 1]
    return StageContext(
        namespace=namespace,
        analysis=spec.analysis,
        drift_gate=spec.drift_gate,
        stage=stage,
        number=number,
        started=started,
        now=now,
        window=window,
        variables=MappingProxyType(
            variables_for(spec, namespace, stage.weight, interval, window) | {"rollout": rollout}
        ),
    )


def variables_for(
    spec: ModelRolloutSpec, namespace: str, stage_weight: int, interval: str, window: str
) -> dict[str, str]:
    """The variables every query may use; unset optionals are empty strings."""
    return {
        "namespace": namespace,
        "stable.deployment": spec.stable.deployment,
        "candidate.deployment": spec.candidate.deployment,
        "stable.service": spec.stable.service or "",
        "candidate.service": spec.candidate.service or "",
        "stable.modelVersion": spec.stable.model_version or "",
        "candidate.modelVersion": spec.candidate.model_version or "",
        "stage.weight": str(stage_weight),
        "interval": interval,
        "window": window,
    }


def window_for(stage_started: datetime, now: datetime, interval_seconds: float) -> str:
    """Time since the stage began as a PromQL range, never shorter than the interval
    (so a fresh stage still has a rate to read), rounded up to whole seconds."""
    elapsed = max((now - stage_started).total_seconds(), interval_seconds)
    return format_promql_duration(timedelta(seconds=math.ceil(elapsed)))
