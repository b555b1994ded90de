"""The small interfaces the controller drives; one adapter module implements each.

- `Objects`: read and apply Kubernetes objects (kube/objects.py; a dict in tests).
- `TrafficRouter`: move the candidate's weight on one kind of routing object
  (routers/, one module per router).
- `MetricsSource`: ask a metrics backend (metrics/prometheus.py; an in-memory
  source in tests). Each answer is data or a Reading that says why there is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from modelrollout.api.objects import ObjectKind
from modelrollout.core.types import Reading, RouteObservation, RouteTarget, Series

Manifest = dict[str, Any]


class Objects(Protocol):
    """Kubernetes objects in one cluster, as plain manifests."""

    async def get(self, kind: ObjectKind, namespace: str, name: str) -> Manifest | None:
        """The object, or None when it does not exist."""

    async def apply(self, kind: ObjectKind, manifest: Manifest) -> None:
        """Server-side apply `manifest` with our field manager, owning what it sets. A
        `metadata.resourceVersion` in it makes a concurrent change fail (409) instead of
        being overwritten."""

    async def delete(self, kind: ObjectKind, namespace: str, name: str) -> None:
        """Delete the object and what it owns, in the background; gone already is fine."""

    async def list(self, kind: ObjectKind, namespace: str, selector: str) -> list[Manifest]:
        """The objects matching a label selector."""

    def seen(self, kind: ObjectKind, body: Manifest, deleted: bool = False) -> None:
        """A watch event of an object, for an adapter that serves reads from watches."""


@dataclass(frozen=True)
class Snapshot:
    """The Deployments as read once this tick (None when missing), shared by the
    readiness check and the replicas router so neither reads them twice."""

    stable: Manifest | None
    candidate: Manifest | None


class TrafficRouter(Protocol):
    """Moves the candidate's weight on one kind of routing object.

    `observe` reads the current weight and verifies it against a target (None when
    the routing object is missing); `apply` sets weight and mirroring. Both are
    idempotent.
    """

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        """The routing object compared with `target`."""

    async def apply(self, target: RouteTarget) -> None:
        """Make `target` true, never dipping capacity: what grows is written first."""


@dataclass(frozen=True)
class Shared:
    """A query in the form rollouts share (metrics/template.render_open): sentinels
    where one rollout's label values differ from the next, and this rollout's values
    for them. A source may answer many rollouts with one query from it."""

    text: str
    values: Mapping[str, str]


class MetricsSource(Protocol):
    """One metrics backend with its credentials. No method raises for the backend's
    sake: a failure comes back as QueryFailed, a refused query as QueryRejected."""

    async def instant(self, query: str, shared: Shared | None = None) -> Reading:
        """An instant query that must be one sample; anything else is NoData.
        `shared` is the same query as other rollouts ask it, for a source that
        answers them together."""

    async def vector(self, query: str, shared: Shared | None = None) -> Series | Reading:
        """Every series of an instant vector with its value (histogram buckets)."""

    async def series(
        self, query: str, start: datetime, end: datetime, step: str
    ) -> list[float] | Reading:
        """The finite points of exactly one series over [start, end]."""

    def close(self) -> None:
        """Release connections; called when the source is no longer used."""
