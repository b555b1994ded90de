"""Properties of `step` over random sequences of observations and actions."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from world import World, gateway_spec

from modelrollout.api.durations import parse_duration
from modelrollout.api.status import ModelRolloutStatus
from modelrollout.core.conditions import condition
from modelrollout.core.machine import ACTIONS
from modelrollout.core.phases import PREFLIGHT_REASONS
from modelrollout.core.types import Judgement, RouteTarget, Workload

SPECS = [
    gateway_spec(),
    gateway_spec(strategy={"preset": "5-10-25-50-100", "stageDuration": "20s"}),
    gateway_spec(
        strategy={
            "stages": [
                {"weight": 0, "mirror": True, "duration": "15s"},
                {"weight": 10, "duration": "30s", "approval": "Manual"},
                {"weight": 60, "duration": "10s"},
                {"weight": 100, "duration": "10s", "approval": "Manual"},
            ]
        }
    ),
]

steps = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 45)),
    st.tuples(st.just("ready"), st.integers(0, 4)),
    st.tuples(st.just("judge"), st.sampled_from([None, "pass", "wait", "pause", "rollback"])),
    st.tuples(st.just("act"), st.sampled_from(sorted(ACTIONS))),
    st.tuples(st.just("override"), st.integers(0, 100)),
    st.tuples(st.just("crash"), st.just(0)),
    st.tuples(st.just("paused"), st.booleans()),
)


def _terminal(status: ModelRolloutStatus) -> bool:
    if status.phase in ("Succeeded", "RolledBack"):
        return True
    stalled = condition(status.conditions, "Stalled")
    return status.phase == "Failed" and not (stalled and stalled.reason in PREFLIGHT_REASONS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_index=st.integers(0, len(SPECS) - 1), script=st.lists(steps, max_size=80))
def test_invariants_hold_over_random_histories(spec_index: int, script: list[Any]) -> None:
    spec = SPECS[spec_index]
    stages = spec.strategy.resolved_stages()
    world = World(spec, stable=Workload(4, 4, 4), candidate=Workload(4, 4, 4))
    crash_next = False
    for kind, value in script:
        if kind == "ready":
            world.candidate = Workload(4, value, value)
            continue
        if kind == "judge":
            world.judgement = None if value is None else Judgement(value, "Judged", "judged")
            continue
        if kind == "act":
            world.action = value
            continue
        if kind == "override" and world.route is not None:
            world.route = RouteTarget(value, False, value, None)
            continue
        if kind == "crash":
            crash_next = True
            continue
        if kind == "paused":
            if world.spec.paused != value:
                world.spec = world.spec.model_copy(update={"paused": value})
                world.generation += 1
            continue
        before, action, generation_before = world.status, world.action, world.generation
        judgement = world.judgement
        started_before = before.stage_started_at
        world.tick(value, perform=not crash_next)
        crash_next = False
        after = world.status
        _check(stages, before, after, action, judgement, started_before, world)
        del generation_before


def _check(
    stages: list[Any],
    before: ModelRolloutStatus,
    after: ModelRolloutStatus,
    action: str | None,
    judgement: Judgement | None,
    started_before: str | None,
    world: World,
) -> None:
    restarted = any(
        h.reason in ("Retry", "SpecChanged") for h in after.history[len(before.history) :]
    )
    # The weight never exceeds the current stage's weight.
    if after.stage == 0:
        assert after.weight == 0
    else:
        assert after.weight <= stages[after.stage - 1].weight
    # The weight never decreases except by a rollback (or a new run).
    if after.weight < before.weight:
        assert after.phase in ("RollingBack", "RolledBack") or restarted
    # A terminal phase is left only by a retry or a spec change.
    if _terminal(before) and after.phase != before.phase:
        assert action == "retry" or after.observed_generation != before.observed_generation
    # A stage completes only with its duration, its analysis and its approval.
    promoted = action in ("promote", "promote-full")
    advanced = after.stage > before.stage >= 1 or (
        after.phase == "Succeeded" and before.phase != "Succeeded"
    )
    if advanced and not promoted and not restarted:
        stage = stages[before.stage - 1]
        assert started_before is not None
        elapsed = world.now.timestamp() - started_before.timestamp()
        # `world.now` is already one tick past the decision.
        assert elapsed + 1 >= parse_duration(stage.duration).total_seconds() - 1e-9
        assert judgement is None or judgement.verdict == "pass"
        assert stage.approval == "Auto"
    # Weight only moves onto a candidate that can serve it.
    if after.stage > before.stage and not restarted and world.candidate is not None:
        needed = max(1, math.ceil(4 * stages[after.stage - 1].weight / 100))
        assert world.candidate.ready >= needed


@settings(max_examples=150, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    crash_points=st.sets(st.integers(0, 400), max_size=12),
)
def test_crashes_never_change_the_weights_written(spec_index: int, crash_points: set[int]) -> None:
    """A pass killed after its status write, at any set of points, leads to exactly
    the weights an uninterrupted run writes, and to no extra Event."""
    spec = SPECS[spec_index]

    def run(crashes: set[int]) -> World:
        world = World(spec)
        for i in range(600):
            if world.status.phase == "Succeeded":
                break
            if world.status.history and world.status.history[-1].reason == "AwaitingApproval":
                world.action = "promote"
            world.tick(5, perform=i not in crashes)
        return world

    clean, crashed = run(set()), run(crash_points)
    assert crashed.status.phase == clean.status.phase == "Succeeded"
    assert crashed.written_weights == clean.written_weights
    transitions = [(h.from_phase, h.to_phase, h.stage, h.reason) for h in clean.status.history]
    assert [(h.from_phase, h.to_phase, h.stage, h.reason) for h in crashed.status.history] == (
        transitions
    )
