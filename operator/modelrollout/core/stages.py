"""Stage arithmetic: how much candidate capacity a weight needs, and what a replica
ratio achieves."""

from __future__ import annotations

import hashlib
import json
import math

from modelrollout.api.spec import ModelRolloutSpec


def candidate_replicas(total: int, weight: int) -> int:
    """Replicas of the candidate for `weight` percent of `total`: rounded up, so a
    small weight still gets one replica, and never more than the total."""
    if weight <= 0:
        return 0
    return min(total, max(1, math.ceil(total * weight / 100)))


def effective_weight(total: int, weight: int) -> float:
    """The share a replica ratio actually gives the candidate, in percent."""
    if total <= 0:
        return 0.0
    return round(100 * candidate_replicas(total, weight) / total, 2)


def ready_replicas_needed(reference: int, weight: int, mirror: bool = False) -> int:
    """Ready candidate replicas needed to serve `weight` percent of a fleet of
    `reference` replicas (at least one whenever it receives any traffic)."""
    if weight <= 0:
        return 1 if mirror else 0
    return max(1, math.ceil(reference * weight / 100))


def rollout_identity(spec: ModelRolloutSpec) -> str:
    """A digest of what defines a rollout run: the targets, the routing and the stages.

    A change of these starts a new run; a change of thresholds or `paused` does not.
    """
    parts = {
        "stable": spec.stable.deployment,
        "candidate": spec.candidate.deployment,
        "services": [spec.stable.service, spec.candidate.service],
        "routing": spec.traffic_routing.to_wire(),
        "stages": [s.to_wire() for s in spec.strategy.resolved_stages()],
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return digest[:16]
