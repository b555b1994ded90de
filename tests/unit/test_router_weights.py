from __future__ import annotations

from modelrollout.core.types import RouteTarget
from modelrollout.routers.mesh import observe_weights
from modelrollout.routers.replicas import ReplicasRouter


def test_mesh_weights_match_only_exactly_with_the_mirroring() -> None:
    target = RouteTarget(weight=25, mirror=False, candidate_floor=25, total_replicas=None)
    assert observe_weights(75, 25, None, target).matches
    assert not observe_weights(75, 25, 100.0, target).matches
    assert not observe_weights(3, 1, None, target).matches  # same share, not ours
    assert observe_weights(3, 1, None, target).weight == 25.0
    assert observe_weights(0, 0, None, target).weight == 0.0


def test_replicas_provision_the_candidate_before_shrinking_the_stable() -> None:
    preparing = RouteTarget(weight=5, mirror=False, candidate_floor=25, total_replicas=10)
    assert ReplicasRouter.counts(preparing) == (9, 3)
    entered = RouteTarget(weight=25, mirror=False, candidate_floor=25, total_replicas=10)
    assert ReplicasRouter.counts(entered) == (7, 3)
    rolled_back = RouteTarget(weight=0, mirror=False, candidate_floor=0, total_replicas=10)
    assert ReplicasRouter.counts(rolled_back) == (10, 0)
