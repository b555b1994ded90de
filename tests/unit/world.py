"""A pure stand-in for the cluster, to drive `step` through whole rollouts.

Only the decision core runs for real here; the world just remembers what the
actions did (the weight on the route, replica counts) and reports it back as the
next tick's observations, as the adapters would.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout.api import ModelRolloutSpec, ModelRolloutStatus
from modelrollout.api.status import DriftStatus
from modelrollout.core.machine import route_target, step
from modelrollout.core.types import (
    Action,
    CheckObservation,
    ConsumeAction,
    Decision,
    EmitEvent,
    Judgement,
    Observations,
    RouteObservation,
    RouteTarget,
    Scale,
    SetRoute,
    Workload,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def gateway_spec(**overrides: Any) -> ModelRolloutSpec:
    spec: dict[str, Any] = {
        "stable": {"deployment": "v1", "service": "v1"},
        "candidate": {"deployment": "v2", "service": "v2"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "route"}},
        "strategy": {"preset": "1-5-25-100", "stageDuration": "30s"},
    }
    spec.update(overrides)
    return ModelRolloutSpec.model_validate(spec)


def replicas_spec(**overrides: Any) -> ModelRolloutSpec:
    spec: dict[str, Any] = {
        "stable": {"deployment": "v1"},
        "candidate": {"deployment": "v2"},
        "trafficRouting": {"replicas": {"totalReplicas": 4}},
        "strategy": {"preset": "1-5-25-100", "stageDuration": "30s"},
    }
    spec.update(overrides)
    return ModelRolloutSpec.model_validate(spec)


@dataclass
class World:
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = field(default_factory=ModelRolloutStatus)
    now: datetime = T0
    generation: int = 1
    stable: Workload | None = field(default_factory=lambda: Workload(4, 4, 4))
    candidate: Workload | None = field(default_factory=lambda: Workload(4, 4, 4))
    route: RouteTarget | None = field(default_factory=lambda: RouteTarget(0, False, 0, None))
    route_problem: str | None = None
    judgement: Judgement | None = None
    drift: DriftStatus | None = None
    checks: tuple[CheckObservation, ...] = ()
    action: str | None = None
    writes: list[RouteTarget] = field(default_factory=list)
    scales: list[Scale] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def observations(self) -> Observations:
        route = None
        if self.route is not None:
            wanted = route_target(self.spec, self.status)
            route = RouteObservation(
                matches=self._matches(self.route, wanted),
                weight=float(self.route.weight),
                problem=self.route_problem,
            )
        return Observations(
            generation=self.generation,
            stable=self.stable,
            candidate=self.candidate,
            route=route,
            judgement=self.judgement,
            action=self.action,
            drift=self.drift,
            checks=self.checks,
        )

    @staticmethod
    def _matches(seen: RouteTarget, wanted: RouteTarget) -> bool:
        if wanted.total_replicas is None:
            return (seen.weight, seen.mirror) == (wanted.weight, wanted.mirror)
        return (seen.weight, seen.candidate_floor) == (wanted.weight, wanted.candidate_floor)

    def tick(self, seconds: float = 1.0, *, perform: bool = True) -> Decision:
        """One pass of the controller; `perform=False` is a crash right after the
        status write, before any action ran."""
        decision = step(self.spec, self.status, self.observations(), self.now)
        self.decisions.append(decision)
        self.status = decision.status
        if any(isinstance(a, ConsumeAction) for a in decision.actions):
            self.action = None
        if perform:
            for action in decision.actions:
                self.perform(action)
        self.now += timedelta(seconds=seconds)
        return decision

    def perform(self, action: Action) -> None:
        if isinstance(action, SetRoute):
            if self.route is not None and self.route_problem is None:
                self.route = action.target
                self.writes.append(action.target)
        elif isinstance(action, Scale):
            self.scales.append(action)
        elif isinstance(action, EmitEvent):
            self.events.append(action)

    def run_until(self, predicate: Any, limit: int = 2000, seconds: float = 1.0) -> None:
        for _ in range(limit):
            if predicate(self):
                return
            self.tick(seconds)
        raise AssertionError(f"not reached after {limit} ticks; status: {self.status}")

    def fork(self) -> World:
        return copy.deepcopy(self)

    @property
    def written_weights(self) -> list[int]:
        weights: list[int] = []
        for target in self.writes:
            if not weights or weights[-1] != target.weight:
                weights.append(target.weight)
        return weights
