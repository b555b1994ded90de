"""Which objects a rollout needs and claims, and who wins a contested claim."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelrollout.api.spec import ModelRolloutSpec


@dataclass(frozen=True, order=True)
class ObjectRef:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def routing_object(spec: ModelRolloutSpec) -> ObjectRef | None:
    routing = spec.traffic_routing
    if routing.gateway_api is not None:
        return ObjectRef("HTTPRoute", routing.gateway_api.http_route)
    if routing.istio is not None:
        return ObjectRef("VirtualService", routing.istio.virtual_service)
    return None


def claimed_objects(spec: ModelRolloutSpec) -> list[ObjectRef]:
    """Objects that only one active rollout may drive at a time."""
    route = routing_object(spec)
    return [
        ObjectRef("Deployment", spec.stable.deployment),
        ObjectRef("Deployment", spec.candidate.deployment),
        *([route] if route else []),
    ]


@dataclass(frozen=True, order=True)
class Claimant:
    """Ordering decides a contested claim: a rollout that has moved traffic keeps its
    claim; otherwise the older one (then the name) wins."""

    not_started: bool
    created: str
    name: str


def claim_conflicts(
    me: Claimant,
    claims: Iterable[ObjectRef],
    claimants: Mapping[ObjectRef, Iterable[Claimant]],
) -> list[str]:
    conflicts = []
    for ref in claims:
        rivals = sorted(c for c in claimants.get(ref, ()) if c.name != me.name and c < me)
        if rivals:
            conflicts.append(f"{ref} is already claimed by ModelRollout {rivals[0].name}")
    return conflicts
