"""Istio: destination weights in one VirtualService HTTP route, and `mirror` with
`mirrorPercentage` for mirror stages.

`spec.http` is an atomic list: the apply carries the whole list as read (with its
resourceVersion) and changes only the two weights and the mirror fields.
"""

from __future__ import annotations

import copy
from typing import Any

from modelrollout.api.spec import IstioRouting, ModelRolloutSpec
from modelrollout.core.machine import RouteObservation, RouteTarget
from modelrollout.kube.apply import apply_custom, read_custom
from modelrollout.kube.client import Kube
from modelrollout.ports import Manifest, Snapshot
from modelrollout.routers.weights import RouteProblem, observe_weights

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"


def _same_host(host: str, service: str) -> bool:
    """`svc`, `svc.ns` and `svc.ns.svc.cluster.local` all name the Service `svc`."""
    return host == service or host.startswith(f"{service}.")


class IstioRouter:
    kind = "VirtualService"

    def __init__(
        self, kube: Kube, namespace: str, spec: ModelRolloutSpec, routing: IstioRouting
    ) -> None:
        self.kube, self.namespace = kube, namespace
        self.name, self.route_name = routing.virtual_service, routing.route_name
        self.stable = spec.stable.service or ""
        self.candidate = spec.candidate.service or ""

    async def _read(self) -> Manifest | None:
        return await read_custom(self.kube, GROUP, VERSION, self.namespace, PLURAL, self.name)

    def _route(self, service: Manifest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        where = f"VirtualService {self.name}"
        routes = service.get("spec", {}).get("http", [])
        if self.route_name is None:
            if not routes:
                raise RouteProblem(f"{where} has no http route")
            http = routes[0]
        else:
            named = [r for r in routes if r.get("name") == self.route_name]
            if not named:
                raise RouteProblem(f"{where} has no http route named {self.route_name}")
            http = named[0]
        destinations = http.get("route", [])

        def find(service_name: str) -> dict[str, Any] | None:
            entry: dict[str, Any]
            for entry in destinations:
                if _same_host(entry.get("destination", {}).get("host", ""), service_name):
                    return entry
            return None

        stable, candidate = find(self.stable), find(self.candidate)
        if stable is None or candidate is None:
            absent = [
                n for n, e in ((self.stable, stable), (self.candidate, candidate)) if e is None
            ]
            raise RouteProblem(f"{where} route has no destination for " + " or ".join(absent))
        return http, stable, candidate

    def _mirrors(self, http: dict[str, Any]) -> bool:
        return _same_host((http.get("mirror") or {}).get("host", ""), self.candidate)

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        service = await self._read()
        if service is None:
            return None
        try:
            http, stable, candidate = self._route(service)
        except RouteProblem as problem:
            return RouteObservation(matches=False, problem=str(problem))
        weights = stable.get("weight", 0), candidate.get("weight", 0)
        return observe_weights(*weights, self._mirrors(http), target)

    async def apply(self, target: RouteTarget) -> None:
        service = await self._read()
        if service is None:
            raise RouteProblem(f"VirtualService {self.name} not found")
        routes = copy.deepcopy(service["spec"]["http"])
        http, stable, candidate = self._route({"spec": {"http": routes}})
        stable["weight"], candidate["weight"] = 100 - target.weight, target.weight
        if target.mirror:
            http["mirror"] = {"host": candidate["destination"]["host"]}
            if "port" in candidate["destination"]:
                http["mirror"]["port"] = candidate["destination"]["port"]
            http["mirrorPercentage"] = {"value": 100.0}
        elif self._mirrors(http):
            http.pop("mirror", None)
            http.pop("mirrorPercentage", None)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualService",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": service["metadata"]["resourceVersion"],
            },
            "spec": {"http": routes},
        }
        await apply_custom(self.kube, GROUP, VERSION, self.namespace, PLURAL, body)
