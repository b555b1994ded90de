"""Istio: destination weights in one VirtualService HTTP route, and `mirror` with
`mirrorPercentage` for mirror stages."""

from __future__ import annotations

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.ports import Objects
from modelrollout.routers.mesh import Entry, MeshRouter, RouteProblem


def _same_host(host: str, service: str) -> bool:
    """`svc`, `svc.ns` and `svc.ns.svc.cluster.local` all name the Service `svc`."""
    return host == service or host.startswith(f"{service}.")


class IstioRouter(MeshRouter):
    list_field = "http"
    default_weight = 0

    def __init__(self, objects: Objects, namespace: str, spec: ModelRolloutSpec) -> None:
        super().__init__(objects, namespace, spec)
        routing = spec.traffic_routing.istio
        assert routing is not None
        self.route_name = routing.route_name

    def locate(self, entries: list[Entry]) -> tuple[Entry, Entry, Entry]:
        if self.route_name is None:
            if not entries:
                raise RouteProblem(f"{self.where} has no http route")
            http = entries[0]
        else:
            named = [r for r in entries if r.get("name") == self.route_name]
            if not named:
                raise RouteProblem(f"{self.where} has no http route named {self.route_name}")
            http = named[0]
        found = {
            service: next(
                (e for e in http.get("route", [])
                 if _same_host(e.get("destination", {}).get("host", ""), service)),
                None,
            )
            for service in (self.stable, self.candidate)
        }  # fmt: skip
        absent = [service for service, entry in found.items() if entry is None]
        if absent:
            raise RouteProblem(f"{self.where} route has no destination for " + " or ".join(absent))
        stable, candidate = found[self.stable], found[self.candidate]
        assert stable is not None and candidate is not None
        return http, stable, candidate

    def mirrored(self, entry: Entry) -> float | None:
        if not _same_host((entry.get("mirror") or {}).get("host", ""), self.candidate):
            return None
        return float((entry.get("mirrorPercentage") or {}).get("value", 100.0))

    def set_mirror(self, entry: Entry, candidate: Entry, percent: int | None) -> None:
        if percent is not None:
            destination = candidate["destination"]
            entry["mirror"] = {"host": destination["host"]}
            if "port" in destination:
                entry["mirror"]["port"] = destination["port"]
            entry["mirrorPercentage"] = {"value": float(percent)}
        elif self.mirrored(entry) is not None:
            entry.pop("mirror", None)
            entry.pop("mirrorPercentage", None)
