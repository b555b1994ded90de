"""The data the decision core takes and returns, apart from the machine itself.

Adapters fill `Observations` (what they saw this tick) and carry out the `Action`s of
a `Decision`; routers, ports, `slo` and `drift` import these without importing the
state machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from modelrollout.api.spec import Check, NotificationEvent
from modelrollout.api.status import (
    CheckPoint,
    DriftStatus,
    MetricStatus,
    ModelRolloutStatus,
    NoDataKind,
    ReceiverStatus,
    SamplesStatus,
)

EventType = Literal["Normal", "Warning"]
JudgementVerdict = Literal["pass", "wait", "pause", "rollback", "invalid"]


# -- readings: one query's answer, as the core understands it ----------------------


@dataclass(frozen=True)
class Value:
    """Exactly one finite sample."""

    value: float


@dataclass(frozen=True)
class NoData:
    """A result that is not one finite sample: holds, never passes or fails."""

    kind: NoDataKind


@dataclass(frozen=True)
class QueryFailed:
    """The metrics source unreachable, timed out or failing: we are blind, not failing."""

    message: str


@dataclass(frozen=True)
class QueryRejected:
    """The source refused the query (bad PromQL): retrying cannot help."""

    message: str


Reading = Value | NoData | QueryFailed | QueryRejected
Series = list[tuple[dict[str, str], float]]  # an instant vector: labels and value


# -- observations ------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A Deployment as seen this tick."""

    replicas: int
    ready: int
    available: int


@dataclass(frozen=True)
class RouteObservation:
    """The routing object compared with the status' route target."""

    matches: bool
    weight: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Judgement:
    """The analysis' and drift gate's combined verdict for this tick.

    pass: the stage may complete; wait: not yet (failing SLO, no data, inconclusive);
    pause: blind (metrics unreachable), hold and say so; rollback: roll back now;
    invalid: the analysis cannot work as written (query refused): fail, move nothing.
    """

    verdict: JudgementVerdict
    reason: str = "AnalysisPassed"
    message: str = ""
    samples: float | None = None


@dataclass(frozen=True)
class Observations:
    """What the adapters saw this tick. A None workload or route means it is missing;
    a None judgement means nothing was judged this tick."""

    generation: int
    missing: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    stable: Workload | None = None
    candidate: Workload | None = None
    route: RouteObservation | None = None
    judgement: Judgement | None = None
    action: str | None = None
    metrics: tuple[MetricStatus, ...] | None = None
    samples: SamplesStatus | None = None
    analysis_errors: int | None = None
    drift: DriftStatus | None = None
    checks: tuple[CheckObservation, ...] = ()
    notifications: tuple[ReceiverStatus, ...] | None = None


# -- gate checks -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckObservation:
    """What the adapter saw of one running attempt. `kpis` is the JSON object a Job
    wrote to its termination message (None: it wrote none); `logs` says where to
    read the Job's logs."""

    point: CheckPoint
    name: str
    attempt: int
    state: Literal["running", "succeeded", "failed"]
    message: str = ""
    kpis: Mapping[str, object] | None = None
    job: str | None = None
    logs: str | None = None


@dataclass(frozen=True)
class CheckAttempt:
    """One attempt of one check at one gate."""

    point: CheckPoint
    check: Check
    attempt: int


@dataclass(frozen=True)
class RunCheck:
    """Start an attempt: create its Job, or call its webhook."""

    run: CheckAttempt


@dataclass(frozen=True)
class StopCheck:
    """Stop an attempt that timed out: delete its Job."""

    run: CheckAttempt


# -- what the router makes true ----------------------------------------------------


@dataclass(frozen=True)
class RouteTarget:
    """The state a router makes true.

    weight: the candidate's share of answered traffic; mirror: copies of the stable's
    traffic go to the candidate, `mirror_percent` of them (answers discarded);
    candidate_floor: the weight the candidate's replicas are provisioned for (the
    replicas router grows the candidate before the stable shrinks, and on a rollback
    keeps them until the stable has grown back); total_replicas: the fleet the
    replicas router splits.
    """

    weight: int
    mirror: bool
    candidate_floor: int
    total_replicas: int | None
    mirror_percent: int = 100


# -- actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class SetRoute:
    target: RouteTarget


@dataclass(frozen=True)
class Scale:
    deployment: str
    replicas: int


@dataclass(frozen=True)
class EmitEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Notify:
    """Tell the receivers of a transition; `sequence` numbers the rollout's
    transitions, so a receiver can tell a repeat or a gap."""

    event: NotificationEvent
    sequence: int
    reason: str
    message: str
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ConsumeAction:
    """Remove the action annotation; done before the status is written, so a crash
    loses an action rather than applying it twice."""

    name: str


Action = SetRoute | Scale | EmitEvent | ConsumeAction | RunCheck | StopCheck


@dataclass(frozen=True)
class Decision:
    """What one tick decided: the status to store, then the actions to carry out.

    The controller writes `status` first (only when `changed`) and performs `actions`
    afterwards, in order; a crash in between is repaired by the next tick, which sees
    the route differ from the status. `notices` go to the notification receivers once
    the status is stored. `requeue_after` is when the next tick is due; `rollback`
    names the reason when this tick started a rollback (for the counters).
    """

    status: ModelRolloutStatus
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    changed: bool = True
    rollback: str | None = None
    notices: tuple[Notify, ...] = ()
