"""What the Gateway API and Istio routers share: weights on two entries of one
routing object, and a mirror of the stable's traffic to the candidate.

The routing object holds its routes in one atomic list (`spec.rules`, `spec.http`),
so `apply` writes that list whole, as read, with the resourceVersion read (a
concurrent edit then fails rather than being lost), changing only the two weights
and our mirror. Weights are relative, so the candidate's share is read as a
percentage; the object matches a target only with exactly (100 - w, w) and the
target's mirroring.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from modelrollout.api.objects import ObjectKind
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.core.types import RouteObservation, RouteTarget
from modelrollout.ports import Manifest, Objects, Snapshot

Entry = dict[str, Any]


class RouteProblem(Exception):
    """The routing object lacks what the rollout needs; nothing is written to it."""


def observe_weights(
    stable_weight: int, candidate_weight: int, mirrored: float | None, target: RouteTarget
) -> RouteObservation:
    """`mirrored`: the percentage of traffic mirrored to the candidate, None if none."""
    total = stable_weight + candidate_weight
    share = 100 * candidate_weight / total if total else 0.0
    expected = (100 - target.weight, target.weight)
    wanted = float(target.mirror_percent) if target.mirror else None
    matches = (stable_weight, candidate_weight) == expected and mirrored == wanted
    return RouteObservation(matches=matches, weight=round(share, 2))


class MeshRouter:
    """One routing object: subclasses say where the two entries are and how a mirror
    is written; reading, comparing and applying are the same for all."""

    list_field: ClassVar[str]  # the atomic list in spec that holds the routes
    default_weight: ClassVar[int]  # an entry's weight when it sets none

    def __init__(self, objects: Objects, namespace: str, spec: ModelRolloutSpec) -> None:
        method = spec.traffic_routing.method
        assert method.object_kind is not None and method.object_name is not None
        self.objects, self.namespace = objects, namespace
        self.object_kind: ObjectKind = method.object_kind
        self.name: str = method.object_name
        self.stable = spec.stable.service or ""
        self.candidate = spec.candidate.service or ""

    @property
    def where(self) -> str:
        return f"{self.object_kind.kind} {self.name}"

    def locate(self, entries: list[Entry]) -> tuple[Entry, Entry, Entry]:
        """The route entry, and within it the stable's and the candidate's backend."""
        raise NotImplementedError

    def mirrored(self, entry: Entry) -> float | None:
        """The percentage of the entry's traffic mirrored to the candidate, or None."""
        raise NotImplementedError

    def set_mirror(self, entry: Entry, candidate: Entry, percent: int | None) -> None:
        """Add, change or remove our mirror (None: remove)."""
        raise NotImplementedError

    async def _read(self) -> Manifest | None:
        return await self.objects.get(self.object_kind, self.namespace, self.name)

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        route = await self._read()
        if route is None:
            return None
        try:
            entry, stable, candidate = self.locate(route.get("spec", {}).get(self.list_field, []))
        except RouteProblem as problem:
            return RouteObservation(matches=False, problem=str(problem))
        weights = (stable.get("weight", self.default_weight),
                   candidate.get("weight", self.default_weight))  # fmt: skip
        return observe_weights(*weights, self.mirrored(entry), target)

    async def apply(self, target: RouteTarget) -> None:
        route = await self._read()
        if route is None:
            raise RouteProblem(f"{self.where} not found")
        entries = copy.deepcopy(route.get("spec", {}).get(self.list_field, []))
        entry, stable, candidate = self.locate(entries)
        stable["weight"], candidate["weight"] = 100 - target.weight, target.weight
        self.set_mirror(entry, candidate, target.mirror_percent if target.mirror else None)
        metadata = {
            "name": self.name,
            "namespace": self.namespace,
            "resourceVersion": route["metadata"]["resourceVersion"],
        }
        manifest = {"metadata": metadata, "spec": {self.list_field: entries}}
        await self.objects.apply(self.object_kind, manifest)
