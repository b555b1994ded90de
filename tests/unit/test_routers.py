"""Each router against a fake of the Objects port: what it reads, what it writes,
in which order, and what it refuses to touch."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, get_args

import pytest
from fakes import Conflict, FakeObjects
from world import gateway_spec, replicas_spec

from modelrollout.api.objects import DEPLOYMENT
from modelrollout.api.spec import GatewayAPIRouting, IstioRouting, TrafficRouting
from modelrollout.core.targets import routing_object
from modelrollout.core.types import RouteTarget
from modelrollout.ports import Snapshot
from modelrollout.routers import ROUTERS, router_for
from modelrollout.routers.mesh import RouteProblem

HTTPROUTE = GatewayAPIRouting.object_kind
VIRTUALSERVICE = IstioRouting.object_kind
NO_SNAPSHOT = Snapshot(None, None)


def target(weight: int, mirror: bool = False, percent: int = 100) -> RouteTarget:
    return RouteTarget(weight, mirror, weight, None, mirror_percent=percent)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_every_routing_method_of_the_spec_has_a_router() -> None:
    methods = [
        next(t for t in get_args(info.annotation) if t is not type(None))
        for info in TrafficRouting.model_fields.values()
    ]
    assert set(ROUTERS) == set(methods)
    for method in methods:  # and each names the object it drives, or none
        assert (method.object_kind is None) == (not method.can_mirror)


# -- Gateway API -------------------------------------------------------------------


def http_route(**rule: Any) -> dict[str, Any]:
    backends = [{"name": "v1", "port": 80, "weight": 100}, {"name": "v2", "port": 80, "weight": 0}]
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
              "backendRefs": backends, **rule}]  # fmt: skip
    return {"metadata": {"name": "route"}, "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}}


def gateway(route: dict[str, Any] | None = None) -> tuple[FakeObjects, Any]:
    objects = FakeObjects()
    if route is not None:
        assert HTTPROUTE is not None
        objects.put(HTTPROUTE, route)
    return objects, router_for(gateway_spec(), objects, "ns")


def test_gateway_api_observes_the_weights_and_reports_a_missing_route() -> None:
    _, router = gateway(http_route())
    seen = run(router.observe(target(0), NO_SNAPSHOT))
    assert (seen.matches, seen.weight) == (True, 0.0)
    assert not run(router.observe(target(5), NO_SNAPSHOT)).matches
    _, missing = gateway(None)
    assert run(missing.observe(target(0), NO_SNAPSHOT)) is None


def test_gateway_api_writes_only_the_weights_and_our_mirror_in_one_apply() -> None:
    objects, router = gateway(http_route(filters=[{"type": "RequestHeaderModifier"}]))
    run(router.apply(target(25)))
    run(router.apply(target(0, mirror=True, percent=5)))
    assert len(objects.applied) == 2
    rule = objects.applied[0][1]["spec"]["rules"][0]
    assert [b["weight"] for b in rule["backendRefs"]] == [75, 25]
    assert rule["filters"] == [{"type": "RequestHeaderModifier"}]  # someone else's kept
    mirrored = objects.applied[1][1]["spec"]["rules"][0]
    assert mirrored["filters"][1] == {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "v2", "port": 80}, "percent": 5},
    }
    assert objects.applied[1][1]["spec"]["parentRefs"] == [{"name": "gw"}]
    assert run(router.observe(target(0, mirror=True, percent=5), NO_SNAPSHOT)).matches
    assert not run(router.observe(target(0, mirror=True), NO_SNAPSHOT)).matches
    run(router.apply(target(50)))
    assert objects.applied[2][1]["spec"]["rules"][0]["filters"] == [
        {"type": "RequestHeaderModifier"}
    ]


def test_gateway_api_reads_a_fraction_and_an_unset_weight_as_gateway_api_does() -> None:
    mirror = {"backendRef": {"name": "v2"}, "fraction": {"numerator": 1, "denominator": 4}}
    route = http_route(filters=[{"type": "RequestMirror", "requestMirror": mirror}])
    for ref in route["spec"]["rules"][0]["backendRefs"]:
        del ref["weight"]  # both default to 1: half each
    _, router = gateway(route)
    seen = run(router.observe(target(0, mirror=True, percent=25), NO_SNAPSHOT))
    assert seen.weight == 50.0
    assert not seen.matches


def test_gateway_api_refuses_a_route_without_our_backends_and_writes_nothing() -> None:
    route = http_route()
    route["spec"]["rules"][0]["backendRefs"].pop()
    objects, router = gateway(route)
    seen = run(router.observe(target(0), NO_SNAPSHOT))
    assert seen.problem == "HTTPRoute route rule 0 has no backendRef for Service v2"
    with pytest.raises(RouteProblem):
        run(router.apply(target(5)))
    assert objects.applied == []


def test_gateway_api_writes_with_the_version_it_read() -> None:
    """An edit between the read and the write fails the write instead of being lost."""

    class Racing(FakeObjects):
        async def get(self, kind: Any, namespace: str, name: str) -> Any:
            found = await super().get(kind, namespace, name)
            self.put(kind, copy.deepcopy(self.store[(kind.kind, namespace, name)]))
            return found

    racing = Racing()
    assert HTTPROUTE is not None
    racing.put(HTTPROUTE, http_route())
    with pytest.raises(Conflict):
        run(router_for(gateway_spec(), racing, "ns").apply(target(5)))
    assert racing.applied == []


# -- Istio -------------------------------------------------------------------------


def virtual_service(*extra: dict[str, Any]) -> dict[str, Any]:
    route = [
        {"destination": {"host": "v1.ns.svc.cluster.local", "port": {"number": 80}}, "weight": 100},
        {"destination": {"host": "v2", "port": {"number": 80}}, "weight": 0},
    ]
    http = [*extra, {"name": "primary", "route": route}]
    return {"metadata": {"name": "vs"}, "spec": {"hosts": ["model"], "http": http}}


def istio(service: dict[str, Any], route_name: str | None = "primary") -> tuple[FakeObjects, Any]:
    objects = FakeObjects()
    assert VIRTUALSERVICE is not None
    objects.put(VIRTUALSERVICE, service)
    routing: dict[str, Any] = {"virtualService": "vs"}
    if route_name:
        routing["routeName"] = route_name
    spec = gateway_spec(trafficRouting={"istio": routing})
    return objects, router_for(spec, objects, "ns")


def test_istio_sets_the_named_routes_weights_and_mirror_only() -> None:
    other = {"name": "canary-header", "route": [{"destination": {"host": "v2"}}]}
    objects, router = istio(virtual_service(other))
    run(router.apply(target(0, mirror=True, percent=10)))
    http = objects.applied[0][1]["spec"]["http"]
    assert http[0] == other  # another route is left as it was
    assert [d["weight"] for d in http[1]["route"]] == [100, 0]
    assert http[1]["mirror"] == {"host": "v2", "port": {"number": 80}}
    assert http[1]["mirrorPercentage"] == {"value": 10.0}
    assert run(router.observe(target(0, mirror=True, percent=10), NO_SNAPSHOT)).matches
    run(router.apply(target(40)))
    http = objects.applied[1][1]["spec"]["http"][1]
    assert "mirror" not in http
    assert "mirrorPercentage" not in http
    assert [d["weight"] for d in http["route"]] == [60, 40]


def test_istio_names_what_is_missing() -> None:
    _, router = istio(virtual_service(), route_name="absent")
    seen = run(router.observe(target(0), NO_SNAPSHOT))
    assert seen.problem == "VirtualService vs has no http route named absent"
    service = virtual_service()
    service["spec"]["http"][0]["route"].pop()
    _, router = istio(service, route_name=None)
    seen = run(router.observe(target(0), NO_SNAPSHOT))
    assert seen.problem == "VirtualService vs route has no destination for v2"


# -- replicas ----------------------------------------------------------------------


def deployments(stable: int, candidate: int) -> FakeObjects:
    objects = FakeObjects()
    objects.put(DEPLOYMENT, {"metadata": {"name": "v1"}, "spec": {"replicas": stable}})
    objects.put(DEPLOYMENT, {"metadata": {"name": "v2"}, "spec": {"replicas": candidate}})
    return objects


def replicas_after(objects: FakeObjects) -> list[tuple[str, int]]:
    return [(m["metadata"]["name"], m["spec"]["replicas"]) for _, m in objects.applied]


@pytest.mark.parametrize(
    ("before", "weight", "floor", "writes"),
    [
        ((4, 0), 0, 25, [("v1", 4), ("v2", 1)]),  # the candidate grows first
        ((4, 1), 25, 25, [("v2", 1), ("v1", 3)]),  # then the stable shrinks
        ((3, 1), 0, 25, [("v1", 4), ("v2", 1)]),  # rollback: the stable grows back first
        ((4, 1), 0, 0, [("v1", 4), ("v2", 0)]),  # and the candidate shrinks last
        ((2, 2), 0, 0, [("v1", 4), ("v2", 0)]),  # both at once: growth first
    ],
)
def test_replicas_writes_what_grows_before_what_shrinks(
    before: tuple[int, int], weight: int, floor: int, writes: list[tuple[str, int]]
) -> None:
    objects = deployments(*before)
    router = router_for(replicas_spec(), objects, "ns")
    run(router.apply(RouteTarget(weight, False, floor, 4)))
    assert replicas_after(objects) == writes


def test_replicas_observes_the_ratio_from_the_snapshot_it_is_given() -> None:
    router = router_for(replicas_spec(), FakeObjects(), "ns")
    snapshot = Snapshot({"spec": {"replicas": 3}}, {"spec": {"replicas": 1}})
    seen = run(router.observe(RouteTarget(25, False, 25, 4), snapshot))
    assert (seen.matches, seen.weight) == (True, 25.0)
    assert run(router.observe(RouteTarget(25, False, 25, 4), Snapshot(None, None))) is None


def test_one_map_names_each_routing_object() -> None:
    assert routing_object(replicas_spec().traffic_routing) is None
    route = routing_object(gateway_spec().traffic_routing)
    assert route is not None
    assert (str(route.ref), route.kind.resource) == (
        "HTTPRoute route",
        "httproutes.gateway.networking.k8s.io",
    )


def test_a_managed_route_is_created_and_written_whole_by_the_operator() -> None:
    managed = {"parentRefs": [{"name": "gw", "namespace": "infra"}], "hostnames": ["m.example"]}
    spec = gateway_spec(
        trafficRouting={"gatewayAPI": {"httpRoute": "route", "managedRoute": managed}}
    )
    objects = FakeObjects()
    router = router_for(spec, objects, "ns")
    first = run(router.observe(target(0), NO_SNAPSHOT))
    assert (first.matches, first.weight) == (False, 0.0)  # absent: the first apply makes it
    run(router.apply(target(0, mirror=True, percent=25)))
    route = objects.applied[0][1]
    assert route["spec"] == {
        "parentRefs": [{"name": "gw", "namespace": "infra"}],
        "hostnames": ["m.example"],
        "rules": [
            {
                "backendRefs": [
                    {"name": "v1", "port": 80, "weight": 100},
                    {"name": "v2", "port": 80, "weight": 0},
                ],
                "filters": [
                    {
                        "type": "RequestMirror",
                        "requestMirror": {"backendRef": {"name": "v2", "port": 80}, "percent": 25},
                    }
                ],
            }
        ],
    }
    assert run(router.observe(target(0, mirror=True, percent=25), NO_SNAPSHOT)).matches
    run(router.apply(target(40)))
    assert [b["weight"] for b in objects.applied[1][1]["spec"]["rules"][0]["backendRefs"]] == [
        60,
        40,
    ]


def test_a_watched_object_is_read_from_the_watch_only_at_the_version_last_known() -> None:
    from modelrollout.kube.objects import KubeObjects

    class Counting(KubeObjects):
        def __init__(self) -> None:
            super().__init__(kube=None)  # type: ignore[arg-type]
            self.stored = http_route()
            self.stored["metadata"] |= {"namespace": "ns", "resourceVersion": "1"}
            self.reads = 0

        async def _read(self, kind: Any, namespace: str, name: str) -> Any:
            self.reads += 1
            return copy.deepcopy(self.stored)

    objects = Counting()
    assert HTTPROUTE is not None
    first = run(objects.get(HTTPROUTE, "ns", "route"))
    objects.seen(HTTPROUTE, copy.deepcopy(objects.stored))  # the watch at the same version
    assert run(objects.get(HTTPROUTE, "ns", "route")) == first
    assert objects.reads == 1
    newer = copy.deepcopy(objects.stored)
    newer["metadata"]["resourceVersion"] = "2"  # someone else wrote
    objects.seen(HTTPROUTE, newer)
    objects.stored = newer
    assert run(objects.get(HTTPROUTE, "ns", "route"))["metadata"]["resourceVersion"] == "2"
    assert objects.reads == 2
    objects.seen(HTTPROUTE, objects.stored, deleted=True)
    run(objects.get(HTTPROUTE, "ns", "route"))
    assert objects.reads == 3


def _counting_objects(version: str) -> Any:
    from modelrollout.kube.objects import KubeObjects

    class Counting(KubeObjects):
        """Reads return `stored`; `during_read` runs while a read is in flight."""

        def __init__(self) -> None:
            super().__init__(kube=None)  # type: ignore[arg-type]
            self.stored = http_route()
            self.stored["metadata"] |= {
                "namespace": "ns", "resourceVersion": version, "managedFields": [{"m": 1}],
            }  # fmt: skip
            self.reads = 0
            self.during_read: Any = None

        async def _read(self, kind: Any, namespace: str, name: str) -> Any:
            self.reads += 1
            answer = copy.deepcopy(self.stored)
            if self.during_read is not None:
                self.during_read()
            return answer

    return Counting()


def test_an_object_first_seen_by_the_watch_is_kept_from_its_first_read() -> None:
    """The watch lists every object before any pass reads it; without keeping the
    read, an object that never changes again would be read on every pass."""
    objects = _counting_objects("7")
    assert HTTPROUTE is not None
    objects.seen(HTTPROUTE, copy.deepcopy(objects.stored))  # listed before anyone asked
    first = run(objects.get(HTTPROUTE, "ns", "route"))
    for _ in range(3):
        assert run(objects.get(HTTPROUTE, "ns", "route")) == {
            **first,
            "metadata": {k: v for k, v in first["metadata"].items() if k != "managedFields"},
        }
    assert objects.reads == 1


def test_a_read_overtaken_by_a_watch_event_is_not_kept() -> None:
    """The read may have been answered before the change the event reports: keeping
    it would serve the older version until the object changed again."""
    objects = _counting_objects("1")
    assert HTTPROUTE is not None
    objects.seen(HTTPROUTE, copy.deepcopy(objects.stored))
    newer = copy.deepcopy(objects.stored)
    newer["metadata"]["resourceVersion"] = "2"
    objects.during_read = lambda: objects.seen(HTTPROUTE, newer)
    assert run(objects.get(HTTPROUTE, "ns", "route"))["metadata"]["resourceVersion"] == "1"
    objects.during_read, objects.stored = None, newer
    assert run(objects.get(HTTPROUTE, "ns", "route"))["metadata"]["resourceVersion"] == "2"
    assert run(objects.get(HTTPROUTE, "ns", "route"))["metadata"]["resourceVersion"] == "2"
    assert objects.reads == 2


class _SlowReads:
    """KubeObjects whose reads of a ConfigMap wait for `release`, counting them."""

    def __new__(cls) -> Any:
        from modelrollout.kube.objects import KubeObjects

        class Slow(KubeObjects):
            def __init__(self) -> None:
                super().__init__(kube=None)  # type: ignore[arg-type]
                self.reads = 0
                self.release = asyncio.Event()
                self.fail: Exception | None = None

            async def _read(self, kind: Any, namespace: str, name: str) -> Any:
                self.reads += 1
                await self.release.wait()
                if self.fail is not None:
                    raise self.fail
                return {"metadata": {"name": name, "resourceVersion": "3"}, "data": {"k": "v"}}

        return Slow()


def test_readers_of_a_config_map_join_the_read_in_flight() -> None:
    """1,000 rollouts starting together share one reference ConfigMap: one read."""
    from modelrollout.api.objects import CONFIG_MAP

    async def scenario() -> list[Any]:
        objects = _SlowReads()
        readers = [
            asyncio.ensure_future(objects.get(CONFIG_MAP, "ns", "training")) for _ in range(5)
        ]
        await asyncio.sleep(0)
        objects.release.set()
        found = await asyncio.gather(*readers)
        assert objects.reads == 1
        return found

    found = run(scenario())
    assert all(f == {"metadata": {"name": "training", "resourceVersion": "3"}, "data": {"k": "v"}}
               for f in found)  # fmt: skip
    assert len({id(f) for f in found}) == 5  # each its own copy to change


def test_a_failed_read_in_flight_fails_its_joiners_and_the_next_read_goes_out() -> None:
    from modelrollout.api.objects import CONFIG_MAP

    async def scenario() -> None:
        objects = _SlowReads()
        objects.fail = RuntimeError("HTTP 500")
        readers = [
            asyncio.ensure_future(objects.get(CONFIG_MAP, "ns", "training")) for _ in range(3)
        ]
        await asyncio.sleep(0)
        objects.release.set()
        results = await asyncio.gather(*readers, return_exceptions=True)
        assert [str(r) for r in results] == ["HTTP 500"] * 3
        objects.fail = None
        assert (await objects.get(CONFIG_MAP, "ns", "training"))["data"] == {"k": "v"}
        assert objects.reads == 2

    run(scenario())


def test_deployments_are_never_joined_a_read_started_before_a_write_could_be_stale() -> None:
    async def scenario() -> None:
        objects = _SlowReads()
        readers = [asyncio.ensure_future(objects.get(DEPLOYMENT, "ns", "model")) for _ in range(2)]
        await asyncio.sleep(0)
        objects.release.set()
        await asyncio.gather(*readers)
        assert objects.reads == 2

    run(scenario())
