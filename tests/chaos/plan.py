"""The soak's plan, all drawn from one seed: which rollouts are healthy and which go
bad (how, and at which stage), and the fault schedule applied while they run.

Same seed, same size and profile: the same plan, printed in full, so a failing run
can be replayed with `make chaos SEED=... N=... PROFILE=...`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

Kind = Literal["healthy", "error-spike", "latency", "drift"]
BAD_KINDS: tuple[Kind, ...] = ("error-spike", "latency", "drift")
BAD_SHARE = 0.45
# The reason each bad kind must be rolled back with (see checks in rollouts.py).
ROLLBACK_REASON = {
    "error-spike": "AbortThresholdBreached",
    "latency": "FailureLimitReached",
    "drift": "DriftDetected",
}
FaultKind = Literal[
    "operator-kill",
    "apiserver-restart",
    "etcd-restart",
    "prometheus-kill",
    "proxy-latency",
    "proxy-stall",
    "proxy-reset",
    "route-edit",
]
# Faults of one lane follow each other; the lanes overlap freely.
LANES: dict[str, tuple[FaultKind, ...]] = {
    "control": ("operator-kill", "apiserver-restart", "etcd-restart"),
    "prometheus": ("prometheus-kill", "proxy-latency", "proxy-stall", "proxy-reset"),
    "route": ("route-edit",),
}
# Prometheus cannot be read through these (see invariants.unreadable_windows).
UNREADABLE: tuple[FaultKind, ...] = ("prometheus-kill", "proxy-stall", "proxy-reset")
Span = tuple[float, float]


@dataclass(frozen=True)
class Profile:
    """Sizes and durations: `soak` for `make chaos`, `ci` for the run in `make test`."""

    name: str
    concurrency: int
    faults_per_100: dict[str, int]  # faults of each kind per 100 rollouts (at least 1)
    prometheus_down: Span
    stall: Span
    reset: Span
    latency: Span
    latency_delay: Span
    operator_down: Span
    min_gap: float  # between two faults of a lane
    stage_seconds: Span = (12.0, 18.0)
    last_stage_seconds: float = 3.0
    interval: int = 5  # analysis.interval, seconds
    timeout: int = 4  # analysis.prometheus.timeout, seconds


COUNTS = {
    "operator-kill": 6,
    "apiserver-restart": 3,
    "etcd-restart": 3,
    "prometheus-kill": 3,
    "proxy-latency": 3,
    "proxy-stall": 3,
    "proxy-reset": 3,
    "route-edit": 12,
}
PROFILES = {
    "soak": Profile(
        name="soak",
        concurrency=20,
        faults_per_100=COUNTS,
        prometheus_down=(30.0, 120.0),
        stall=(5.0, 30.0),
        reset=(5.0, 20.0),
        latency=(10.0, 40.0),
        latency_delay=(0.2, 1.0),
        operator_down=(0.0, 10.0),
        min_gap=10.0,
    ),
    "ci": Profile(
        name="ci",
        concurrency=10,
        faults_per_100=COUNTS | {"route-edit": 20},
        prometheus_down=(8.0, 15.0),
        stall=(4.0, 8.0),
        reset=(3.0, 6.0),
        latency=(5.0, 10.0),
        latency_delay=(0.2, 1.0),
        operator_down=(0.0, 3.0),
        min_gap=3.0,
    ),
}


@dataclass(frozen=True)
class RolloutPlan:
    name: str
    kind: Kind
    stages: tuple[tuple[int, float], ...]  # (weight %, duration s)
    bad_stage: int | None  # 1-based: the candidate goes bad when this stage starts
    scale_down: bool  # scaleDownDelay on both sides
    seed: int  # the candidate's exporter

    @property
    def bad(self) -> bool:
        return self.kind != "healthy"


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the soak starts
    kind: FaultKind
    duration: float = 0.0  # down, stalled, resetting, slow; the operator's time down
    delay: float = 0.0  # proxy-latency: seconds added to each chunk, each way
    hard: bool = False  # apiserver/etcd: SIGKILL rather than SIGTERM
    target: str = ""  # route-edit: the rollout whose route is edited ...
    stage: int = 0  # ... once it is in this stage (below 100%, before it goes bad) ...
    into: float = 0.0  # ... for this many seconds
    how: str = ""  # route-edit: "flux-ssa" (Git's weights, forced) or "kubectl-patch"
    weight: int = 0  # route-edit by kubectl-patch: the candidate weight it sets


@dataclass(frozen=True)
class Plan:
    seed: int
    profile: Profile
    rollouts: tuple[RolloutPlan, ...]
    faults: tuple[Fault, ...] = field(default=())

    def describe(self) -> str:
        """The whole plan as JSON lines: what a replay reproduces."""
        lines = [
            json.dumps({"seed": self.seed, "n": len(self.rollouts), "profile": self.profile.name})
        ]
        lines += [json.dumps(asdict(r)) for r in self.rollouts]
        lines += [json.dumps(asdict(f)) for f in self.faults]
        return "\n".join(lines)

    def replay(self) -> str:
        return f"make chaos SEED={self.seed} N={len(self.rollouts)} PROFILE={self.profile.name}"


def make_plan(seed: int, n: int, profile: Profile) -> Plan:
    rng = random.Random(seed)
    rollouts = _rollouts(rng, n, profile)
    horizon = _horizon(rollouts, profile)
    faults: list[Fault] = []
    for lane, kinds in LANES.items():
        if lane != "route":
            faults += _lane(rng, kinds, n, horizon, profile)
    faults += _route_edits(rng, rollouts, profile)
    return Plan(seed, profile, tuple(rollouts), tuple(sorted(faults, key=lambda f: f.at)))


def _rollouts(rng: random.Random, n: int, profile: Profile) -> list[RolloutPlan]:
    bad = round(n * BAD_SHARE)
    kinds: list[Kind] = [BAD_KINDS[i % len(BAD_KINDS)] for i in range(bad)]
    kinds += ["healthy"] * (n - bad)
    rng.shuffle(kinds)
    out = []
    for i, kind in enumerate(kinds):
        weights = rng.choice([(10, 50, 100), (5, 25, 60, 100), (20, 100)])
        stages = tuple(
            (
                w,
                round(rng.uniform(*profile.stage_seconds))
                if w < 100
                else profile.last_stage_seconds,
            )
            for w in weights
        )
        bad_stage = rng.randint(1, len(stages) - 1) if kind != "healthy" else None
        out.append(
            RolloutPlan(
                name=f"r{i:03d}",
                kind=kind,
                stages=stages,
                bad_stage=bad_stage,
                scale_down=rng.random() < 0.5,
                seed=rng.randrange(1 << 30),
            )
        )
    return out


def expected_seconds(rollout: RolloutPlan, profile: Profile) -> float:
    """A healthy run without faults: each stage lasts its duration, then waits at most
    one interval for its last check, plus a first tick before stage 1."""
    return profile.interval + sum(d + profile.interval for _, d in rollout.stages)


def _horizon(rollouts: list[RolloutPlan], profile: Profile) -> float:
    """How long the rollouts take without faults, in waves of `concurrency`."""
    mean = sum(expected_seconds(r, profile) for r in rollouts) / len(rollouts)
    return math.ceil(len(rollouts) / profile.concurrency) * mean


def _lane(
    rng: random.Random, kinds: tuple[FaultKind, ...], n: int, horizon: float, profile: Profile
) -> list[Fault]:
    """The lane's faults in a seeded order, spread over the horizon with seeded gaps."""
    todo = [k for k in kinds for _ in range(max(1, round(profile.faults_per_100[k] * n / 100)))]
    rng.shuffle(todo)
    faults = [_fault(rng, kind, profile) for kind in todo]
    shares = [rng.uniform(0.5, 1.5) for _ in faults]
    spare = max(0.0, horizon * 0.85 - sum(f.duration for f in faults))
    at, out = horizon * 0.05, []
    for fault, share in zip(faults, shares, strict=True):
        at += max(profile.min_gap, spare * share / sum(shares))
        out.append(replace(fault, at=round(at, 1)))
        at += fault.duration
    return out


def _route_edits(rng: random.Random, rollouts: list[RolloutPlan], profile: Profile) -> list[Fault]:
    """Route edits are timed by the rollouts, not the clock: each is made a few seconds
    after its target enters a stage below 100% and before it goes bad, so it always
    lands on a rollout in flight, whatever the faults did to the timeline. Distinct
    targets, as far as there are enough."""
    n = len(rollouts)
    count = max(1, round(profile.faults_per_100["route-edit"] * n / 100))
    eligible = [r for r in rollouts if (r.bad_stage or len(r.stages)) > 1]
    targets = rng.sample(eligible, min(count, len(eligible)))
    targets += [rng.choice(eligible) for _ in range(count - len(targets))]
    hows = ["flux-ssa", "kubectl-patch"]  # both, whenever there are two edits or more
    rng.shuffle(hows)
    out = []
    for i, target in enumerate(targets):
        last = (target.bad_stage or len(target.stages)) - 1  # the last stage it may be edited in
        stage = rng.randint(1, last)
        into = round(rng.uniform(1.0, min(6.0, target.stages[stage - 1][1] / 2)), 1)
        how = hows[i % 2]
        out.append(
            Fault(0.0, "route-edit", target=target.name, stage=stage, into=into, how=how,
                  weight=rng.randrange(0, 101))
        )  # fmt: skip
    return out


def _fault(rng: random.Random, kind: FaultKind, profile: Profile) -> Fault:
    def draw(span: Span) -> float:
        return round(rng.uniform(*span), 1)

    if kind == "prometheus-kill":
        return Fault(0.0, kind, duration=draw(profile.prometheus_down))
    if kind == "proxy-stall":
        return Fault(0.0, kind, duration=draw(profile.stall))
    if kind == "proxy-reset":
        return Fault(0.0, kind, duration=draw(profile.reset))
    if kind == "proxy-latency":
        return Fault(0.0, kind, duration=draw(profile.latency), delay=draw(profile.latency_delay))
    if kind == "operator-kill":
        return Fault(0.0, kind, duration=draw(profile.operator_down))
    if kind in ("apiserver-restart", "etcd-restart"):
        return Fault(0.0, kind, hard=rng.random() < 0.5)
    raise ValueError(f"{kind}: not a timed fault")
