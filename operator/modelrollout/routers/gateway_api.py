"""Gateway API: weights on the stable and candidate backendRefs of one HTTPRoute
rule, and a RequestMirror filter for mirror stages.

`spec.rules` is an atomic list, so the apply carries the whole list as read (with
its resourceVersion, so a concurrent edit makes it fail rather than be lost) and
changes only the two weights and our mirror filter.
"""

from __future__ import annotations

import copy
from typing import Any

from modelrollout.api.spec import GatewayAPIRouting, ModelRolloutSpec
from modelrollout.core.machine import RouteObservation, RouteTarget
from modelrollout.kube.apply import apply_custom, read_custom
from modelrollout.kube.client import Kube
from modelrollout.ports import Manifest, Snapshot
from modelrollout.routers.weights import RouteProblem, observe_weights

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"


class GatewayAPIRouter:
    kind = "HTTPRoute"

    def __init__(
        self, kube: Kube, namespace: str, spec: ModelRolloutSpec, routing: GatewayAPIRouting
    ) -> None:
        self.kube, self.namespace = kube, namespace
        self.name, self.rule_index = routing.http_route, routing.rule_index
        self.stable = spec.stable.service or ""
        self.candidate = spec.candidate.service or ""

    async def _read(self) -> Manifest | None:
        return await read_custom(self.kube, GROUP, VERSION, self.namespace, PLURAL, self.name)

    def _backends(self, route: Manifest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        rules = route.get("spec", {}).get("rules", [])
        where = f"HTTPRoute {self.name}"
        if self.rule_index >= len(rules):
            raise RouteProblem(f"{where} has no rule {self.rule_index} ({len(rules)} rules)")
        rule = rules[self.rule_index]
        refs = {ref.get("name"): ref for ref in rule.get("backendRefs", [])}
        absent = [name for name in (self.stable, self.candidate) if name not in refs]
        if absent:
            raise RouteProblem(
                f"{where} rule {self.rule_index} has no backendRef for Service "
                + " or ".join(absent)
            )
        return rule, refs[self.stable], refs[self.candidate]

    def _mirrors(self, rule: dict[str, Any]) -> bool:
        return any(self._is_our_mirror(f) for f in rule.get("filters", []))

    def _is_our_mirror(self, item: dict[str, Any]) -> bool:
        backend = (item.get("requestMirror") or {}).get("backendRef") or {}
        return item.get("type") == "RequestMirror" and backend.get("name") == self.candidate

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        route = await self._read()
        if route is None:
            return None
        try:
            rule, stable, candidate = self._backends(route)
        except RouteProblem as problem:
            return RouteObservation(matches=False, problem=str(problem))
        weights = stable.get("weight", 1), candidate.get("weight", 1)
        return observe_weights(*weights, self._mirrors(rule), target)

    async def apply(self, target: RouteTarget) -> None:
        route = await self._read()
        if route is None:
            raise RouteProblem(f"HTTPRoute {self.name} not found")
        rules = copy.deepcopy(route["spec"]["rules"])
        rule, stable, candidate = self._backends({"spec": {"rules": rules}})
        stable["weight"], candidate["weight"] = 100 - target.weight, target.weight
        filters = [f for f in rule.get("filters", []) if not self._is_our_mirror(f)]
        if target.mirror:
            mirror_to = {"name": self.candidate, "port": candidate.get("port")}
            if "namespace" in candidate:
                mirror_to["namespace"] = candidate["namespace"]
            filters.append(
                {
                    "type": "RequestMirror",
                    "requestMirror": {"backendRef": {k: v for k, v in mirror_to.items() if v}},
                }
            )
        if filters:
            rule["filters"] = filters
        else:
            rule.pop("filters", None)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HTTPRoute",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": route["metadata"]["resourceVersion"],
            },
            "spec": {"rules": rules},
        }
        await apply_custom(self.kube, GROUP, VERSION, self.namespace, PLURAL, body)
