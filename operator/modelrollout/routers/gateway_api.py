"""Gateway API: weights on the stable and candidate backendRefs of one HTTPRoute
rule, and a RequestMirror filter (with `percent` below 100) for mirror stages.

With `managedRoute` the route is the operator's own: it is created when missing and
written whole (parentRefs, hostnames and one rule to the two Services), so nothing
else holds its weights."""

from __future__ import annotations

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.core.types import RouteObservation, RouteTarget
from modelrollout.ports import Objects, Snapshot
from modelrollout.routers.mesh import Entry, MeshRouter, RouteProblem


class GatewayAPIRouter(MeshRouter):
    list_field = "rules"
    default_weight = 1  # Gateway API's default

    def __init__(self, objects: Objects, namespace: str, spec: ModelRolloutSpec) -> None:
        super().__init__(objects, namespace, spec)
        routing = spec.traffic_routing.gateway_api
        assert routing is not None
        self.rule_index, self.managed = routing.rule_index, routing.managed_route

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        seen = await super().observe(target, snapshot)
        if seen is None and self.managed is not None:
            return RouteObservation(matches=False, weight=0.0)  # made by the first apply
        return seen

    async def apply(self, target: RouteTarget) -> None:
        if self.managed is None:
            await super().apply(target)
            return
        port = self.managed.port
        rule: Entry = {
            "backendRefs": [
                {"name": self.stable, "port": port, "weight": 100 - target.weight},
                {"name": self.candidate, "port": port, "weight": target.weight},
            ]
        }
        self.set_mirror(
            rule, rule["backendRefs"][1], target.mirror_percent if target.mirror else None
        )
        spec: Entry = {"parentRefs": self.managed.parent_refs, "rules": [rule]}
        if self.managed.hostnames:
            spec["hostnames"] = self.managed.hostnames
        metadata = {"name": self.name, "namespace": self.namespace}
        await self.objects.apply(self.object_kind, {"metadata": metadata, "spec": spec})

    def locate(self, entries: list[Entry]) -> tuple[Entry, Entry, Entry]:
        if self.rule_index >= len(entries):
            raise RouteProblem(f"{self.where} has no rule {self.rule_index} ({len(entries)} rules)")
        rule = entries[self.rule_index]
        refs = {ref.get("name"): ref for ref in rule.get("backendRefs", [])}
        absent = [name for name in (self.stable, self.candidate) if name not in refs]
        if absent:
            raise RouteProblem(
                f"{self.where} rule {self.rule_index} has no backendRef for Service "
                + " or ".join(absent)
            )
        return rule, refs[self.stable], refs[self.candidate]

    def _ours(self, item: Entry) -> bool:
        backend = (item.get("requestMirror") or {}).get("backendRef") or {}
        return item.get("type") == "RequestMirror" and backend.get("name") == self.candidate

    def mirrored(self, entry: Entry) -> float | None:
        mirror = next((f for f in entry.get("filters", []) if self._ours(f)), None)
        if mirror is None:
            return None
        request = mirror["requestMirror"]
        if "percent" in request:
            return float(request["percent"])
        fraction = request.get("fraction")
        if fraction:
            return (
                100.0
                * float(fraction.get("numerator", 0))
                / float(fraction.get("denominator", 100))
            )
        return 100.0

    def set_mirror(self, entry: Entry, candidate: Entry, percent: int | None) -> None:
        filters = [f for f in entry.get("filters", []) if not self._ours(f)]
        if percent is not None:
            mirror_to = {"name": self.candidate, "port": candidate.get("port")}
            if "namespace" in candidate:
                mirror_to["namespace"] = candidate["namespace"]
            request: Entry = {"backendRef": {k: v for k, v in mirror_to.items() if v}}
            if percent < 100:
                request["percent"] = percent
            filters.append({"type": "RequestMirror", "requestMirror": request})
        if filters:
            entry["filters"] = filters
        else:
            entry.pop("filters", None)
