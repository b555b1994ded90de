"""The adapters one operator process shares across rollouts, made once at startup."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from modelrollout.controller.references import ReferenceCache
from modelrollout.egress import AddressPolicy
from modelrollout.kube.client import Kube
from modelrollout.kube.objects import KubeObjects
from modelrollout.metrics.connections import Connections
from modelrollout.notify import Notifier, Receiver
from modelrollout.ports import Objects

QUERY_THREADS = 8


@dataclass
class Adapters:
    kube: Kube
    objects: Objects
    connections: Connections
    references: ReferenceCache
    notifier: Notifier
    receivers: list[Receiver] = field(default_factory=list)  # the operator's own
    # The resourceVersion each rollout's daemon last wrote or read, by uid: kopf's copy
    # at exactly that version is as fresh as a read (controller/reconcile.py).
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_kube(
        cls,
        kube: Kube,
        policy: AddressPolicy,
        query_threads: int = QUERY_THREADS,
        receivers: list[Receiver] | None = None,
        shared_queries: bool = True,
    ) -> Adapters:
        objects = KubeObjects(kube)
        pool = ThreadPoolExecutor(query_threads, thread_name_prefix="metrics")
        connections = Connections(objects, pool, policy, shared_queries)
        notifier = Notifier(policy)
        return cls(kube, objects, connections, ReferenceCache(objects), notifier, receivers or [])

    async def close(self) -> None:
        await self.notifier.close(deadline=5)
        self.connections.close()
        self.kube.close()
