"""Traffic routers, one module each, registered below against the routing method
(`trafficRouting` field) they serve. docs/contributing.md lists every step of
adding one; a unit test holds this registry to the spec's one-of."""

from __future__ import annotations

from collections.abc import Callable

from modelrollout.api.spec import (
    GatewayAPIRouting,
    IstioRouting,
    ModelRolloutSpec,
    ReplicasRouting,
    RoutingMethod,
)
from modelrollout.ports import Objects, TrafficRouter
from modelrollout.routers.gateway_api import GatewayAPIRouter
from modelrollout.routers.istio import IstioRouter
from modelrollout.routers.replicas import ReplicasRouter

RouterFactory = Callable[[Objects, str, ModelRolloutSpec], TrafficRouter]

ROUTERS: dict[type[RoutingMethod], RouterFactory] = {
    ReplicasRouting: ReplicasRouter,
    GatewayAPIRouting: GatewayAPIRouter,
    IstioRouting: IstioRouter,
}


def router_for(spec: ModelRolloutSpec, objects: Objects, namespace: str) -> TrafficRouter:
    return ROUTERS[type(spec.traffic_routing.method)](objects, namespace, spec)
