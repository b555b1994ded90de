from __future__ import annotations

from modelrollout.core.machine import RouteTarget
from modelrollout.routers.replicas import ReplicasRouter
from modelrollout.routers.weights import observe_weights


def test_mesh_weights_match_only_exactly_with_the_mirroring() -> None:
    target = RouteTarget(weight=25, mirror=False, candidate_floor=25, total_replicas=None)
    assert observe_weights(75, 25, False, target).matches
    assert not observe_weights(75, 25, True, target).matches
    assert not observe_weights(3, 1, False, target).matches  # same share, not ours
    assert observe_weights(3, 1, False, target).weight == 25.0
    assert observe_weights(0, 0, False, target).weight == 0.0


def test_replicas_provision_the_candidate_before_shrinking_the_stable() -> None:
    preparing = RouteTarget(weight=5, mirror=False, candidate_floor=25, total_replicas=10)
    assert ReplicasRouter.counts(preparing) == (9, 3)
    entered = RouteTarget(weight=25, mirror=False, candidate_floor=25, total_replicas=10)
    assert ReplicasRouter.counts(entered) == (7, 3)
    rolled_back = RouteTarget(weight=0, mirror=False, candidate_floor=0, total_replicas=10)
    assert ReplicasRouter.counts(rolled_back) == (10, 0)
