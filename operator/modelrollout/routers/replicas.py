"""No mesh: one Service selects both Deployments, and replica counts set the split.

The candidate is scaled up for the next stage first (its `candidate_floor`) and the
stable is scaled down only once the candidate's replicas are ready, so capacity
never dips. The weight is approximate: ceil(total x weight / 100) replicas.
"""

from __future__ import annotations

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.core.machine import RouteObservation, RouteTarget
from modelrollout.core.stages import candidate_replicas
from modelrollout.kube.apply import apply_deployment_replicas
from modelrollout.kube.client import Kube
from modelrollout.ports import Manifest, Snapshot


def _replicas(deployment: Manifest | None) -> int:
    if deployment is None:
        return 0
    return int(deployment.get("spec", {}).get("replicas", 1))


class ReplicasRouter:
    kind = "Deployment replicas"

    def __init__(self, kube: Kube, namespace: str, spec: ModelRolloutSpec) -> None:
        self.kube, self.namespace = kube, namespace
        self.stable, self.candidate = spec.stable.deployment, spec.candidate.deployment

    @staticmethod
    def counts(target: RouteTarget) -> tuple[int, int]:
        """(stable, candidate) replicas for a target."""
        total = target.total_replicas or 0
        stable = total - candidate_replicas(total, target.weight)
        return stable, candidate_replicas(total, target.candidate_floor)

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        if snapshot.stable is None or snapshot.candidate is None:
            return None
        stable, candidate = _replicas(snapshot.stable), _replicas(snapshot.candidate)
        total = stable + candidate
        weight = 100 * candidate / total if total else 0.0
        matches = (stable, candidate) == self.counts(target)
        return RouteObservation(matches=matches, weight=round(weight, 2))

    async def apply(self, target: RouteTarget) -> None:
        stable, candidate = self.counts(target)
        # Candidate first: when it grows, the stable shrinks only after it is in place.
        await apply_deployment_replicas(self.kube, self.namespace, self.candidate, candidate)
        await apply_deployment_replicas(self.kube, self.namespace, self.stable, stable)
