"""The adapters one operator process shares across rollouts, made once at startup."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelrollout.controller.references import ReferenceCache
from modelrollout.egress import AddressPolicy
from modelrollout.kube.client import Kube
from modelrollout.kube.objects import KubeObjects
from modelrollout.metrics.connections import Connections
from modelrollout.ports import Objects

QUERY_THREADS = 8


@dataclass
class Adapters:
    kube: Kube
    objects: Objects
    connections: Connections
    references: ReferenceCache

    @classmethod
    def for_kube(
        cls, kube: Kube, policy: AddressPolicy, query_threads: int = QUERY_THREADS
    ) -> Adapters:
        objects = KubeObjects(kube)
        pool = ThreadPoolExecutor(query_threads, thread_name_prefix="metrics")
        return cls(kube, objects, Connections(objects, pool, policy), ReferenceCache(objects))

    def close(self) -> None:
        self.connections.close()
        self.kube.close()
