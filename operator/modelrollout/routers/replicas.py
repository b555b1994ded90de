"""No mesh: one Service selects both Deployments, and replica counts set the split.

Capacity never dips. Whatever grows is written before whatever shrinks; the machine
grows the candidate for the next stage first (its `candidate_floor`) and, on a
rollback, keeps the candidate's replicas until the stable has grown back. The
weight is approximate: ceil(total x weight / 100) replicas.
"""

from __future__ import annotations

from modelrollout.api.objects import DEPLOYMENT
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.core.stages import candidate_replicas
from modelrollout.core.types import RouteObservation, RouteTarget
from modelrollout.ports import Manifest, Objects, Snapshot


def _replicas(deployment: Manifest | None) -> int:
    if deployment is None:
        return 0
    return int(deployment.get("spec", {}).get("replicas", 1))


class ReplicasRouter:
    def __init__(self, objects: Objects, namespace: str, spec: ModelRolloutSpec) -> None:
        self.objects, self.namespace = objects, namespace
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
        wanted = dict(zip((self.stable, self.candidate), self.counts(target), strict=True))
        now = {name: _replicas(await self.objects.get(DEPLOYMENT, self.namespace, name))
               for name in wanted}  # fmt: skip
        # growth first: the side that shrinks does so only once the other has grown
        for name in sorted(wanted, key=lambda n: wanted[n] < now[n]):
            await scale(self.objects, self.namespace, name, wanted[name])


async def scale(objects: Objects, namespace: str, deployment: str, replicas: int) -> None:
    """Own `spec.replicas` of a Deployment and nothing else of it."""
    metadata = {"name": deployment, "namespace": namespace}
    await objects.apply(DEPLOYMENT, {"metadata": metadata, "spec": {"replicas": replicas}})
