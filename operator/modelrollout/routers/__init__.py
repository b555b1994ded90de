"""Traffic routers, one module each. A new router is one module and one line here."""

from __future__ import annotations

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.kube.client import Kube
from modelrollout.ports import TrafficRouter
from modelrollout.routers.gateway_api import GatewayAPIRouter
from modelrollout.routers.istio import IstioRouter
from modelrollout.routers.replicas import ReplicasRouter


def router_for(spec: ModelRolloutSpec, kube: Kube, namespace: str) -> TrafficRouter:
    routing = spec.traffic_routing
    if routing.gateway_api is not None:
        return GatewayAPIRouter(kube, namespace, spec, routing.gateway_api)
    if routing.istio is not None:
        return IstioRouter(kube, namespace, spec, routing.istio)
    return ReplicasRouter(kube, namespace, spec)
