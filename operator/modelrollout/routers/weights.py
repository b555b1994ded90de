"""What the mesh routers share: two weights and a mirror flag against a target."""

from __future__ import annotations

from modelrollout.core.machine import RouteObservation, RouteTarget


class RouteProblem(Exception):
    """The routing object lacks what the rollout needs; nothing is written to it."""


def observe_weights(
    stable_weight: int, candidate_weight: int, mirroring: bool, target: RouteTarget
) -> RouteObservation:
    """Weights are relative, so the candidate's share is read as a percentage; the
    object matches only with exactly (100 - w, w) and the target's mirroring."""
    total = stable_weight + candidate_weight
    share = 100 * candidate_weight / total if total else 0.0
    expected = (100 - target.weight, target.weight)
    matches = (stable_weight, candidate_weight) == expected and mirroring == target.mirror
    return RouteObservation(matches=matches, weight=round(share, 2))
