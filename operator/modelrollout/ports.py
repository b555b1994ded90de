"""The small interfaces the controller drives; one adapter module implements each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from modelrollout.core.machine import RouteObservation, RouteTarget

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """The Deployments as read once this tick (None when missing), shared by the
    readiness check and the replicas router so neither reads them twice."""

    stable: Manifest | None
    candidate: Manifest | None


class TrafficRouter(Protocol):
    """Moves the candidate's weight on one kind of routing object.

    `observe` reads the current weight and verifies it against a target (None when
    the routing object is missing); `apply` sets weight and mirroring in one write.
    Both are idempotent.
    """

    kind: str

    async def observe(self, target: RouteTarget, snapshot: Snapshot) -> RouteObservation | None:
        """The routing object compared with `target`."""

    async def apply(self, target: RouteTarget) -> None:
        """Make `target` true with one server-side apply per object."""
