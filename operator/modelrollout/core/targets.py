"""Which objects a rollout needs and claims, and who wins a contested claim."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelrollout.api.objects import DEPLOYMENT, ObjectKind, ObjectRef
from modelrollout.api.spec import ModelRolloutSpec, TrafficRouting, routing_methods
from modelrollout.api.status import TERMINAL_PHASES


@dataclass(frozen=True)
class RoutingObject:
    """The object a routing method drives: its kind (with API group) and name."""

    kind: ObjectKind
    name: str

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.kind.kind, self.name)


def routing_object(routing: TrafficRouting) -> RoutingObject | None:
    """The one map from a routing spec to its object; None when the method drives
    replica counts only."""
    method = routing.method
    if method.object_kind is None or method.object_name is None:
        return None
    return RoutingObject(method.object_kind, method.object_name)


def routing_kinds(*, created: bool | None = None) -> list[ObjectKind]:
    """Every kind a routing method can drive, for RBAC and its tests; `created`: only
    those the operator may (True) or may not (False) create."""
    return [
        m.object_kind
        for _, m in routing_methods().values()
        if m.object_kind is not None and created in (None, m.can_own_object)
    ]


def claimed_objects(spec: ModelRolloutSpec) -> list[ObjectRef]:
    """Objects that only one active rollout may drive at a time."""
    route = routing_object(spec.traffic_routing)
    return [
        ObjectRef(DEPLOYMENT.kind, spec.stable.deployment),
        ObjectRef(DEPLOYMENT.kind, spec.candidate.deployment),
        *([route.ref] if route else []),
    ]


@dataclass(frozen=True, order=True)
class Claimant:
    """Ordering decides a contested claim: a rollout that has moved traffic keeps its
    claim; otherwise the older one (then the name) wins."""

    not_started: bool
    created: str
    name: str


def claimant_of(name: str, meta: Mapping[str, Any], status: Mapping[str, Any]) -> Claimant:
    return Claimant(
        not_started=int(status.get("stage") or 0) == 0,
        created=str(meta.get("creationTimestamp", "")),
        name=name,
    )


def claims_of(
    name: str, meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> list[tuple[ObjectRef, Claimant]]:
    """What a stored rollout claims: nothing once finished, or when its spec is
    unreadable (it moves nothing then)."""
    if status.get("phase") in TERMINAL_PHASES:
        return []
    try:
        parsed = ModelRolloutSpec.model_validate(dict(spec))
    except ValidationError:
        return []
    me = claimant_of(name, meta, status)
    return [(ref, me) for ref in claimed_objects(parsed)]


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
