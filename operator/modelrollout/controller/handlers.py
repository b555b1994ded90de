"""The only kopf decorators in the project; each hands over to controller/ at once.

One daemon per ModelRollout drives it; several change handlers on one object can
lose update events (kopf #1072, #1178). A cheap event handler wakes the daemon
when the spec or the action annotation changes, so it does not wait a full
interval to notice.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from modelrollout import telemetry
from modelrollout.api.objects import CONFIG_MAP, DEPLOYMENT, ObjectKind, ObjectRef
from modelrollout.api.resource import ACTION_ANNOTATION, FINALIZER, GROUP, PLURAL, VERSION
from modelrollout.controller.adapters import Adapters
from modelrollout.controller.daemon import drive, forget_wake, wake_event
from modelrollout.controller.notifications import ENVIRONMENT as RECEIVERS_ENVIRONMENT
from modelrollout.controller.notifications import operator_receivers
from modelrollout.controller.reconcile import Logger, release
from modelrollout.core.phases import needs_driving
from modelrollout.core.targets import Claimant, claims_of, routing_kinds
from modelrollout.egress import AddressPolicy
from modelrollout.kube.client import Kube
from modelrollout.metrics.connections import SHARING_ENVIRONMENT

WATCH_SERVER_TIMEOUT_SECONDS = 300
WATCH_CLIENT_TIMEOUT_SECONDS = 330  # longer than the server's, so a frozen watch is noticed


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_SECONDS
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.INFO
    receivers = operator_receivers(os.environ.get(RECEIVERS_ENVIRONMENT))
    policy = AddressPolicy.from_environment()
    shared = os.environ.get(SHARING_ENVIRONMENT, "on") != "off"
    memo.adapters = Adapters.for_kube(
        Kube.from_environment(), policy, receivers=receivers, shared_queries=shared
    )
    memo.driven = set()  # uids of rollouts whose daemon here runs or released them
    # kopf gives each object a shallow copy of this memo: containers made here are
    # shared by every handler, of every resource (a route's event wakes a rollout).
    memo.wakes = {}
    memo.seen = {}


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("adapters") is not None:
        await memo.adapters.close()


@kopf.index(GROUP, VERSION, PLURAL)
def rollout_claims(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    **_: Any,
) -> dict[tuple[str, str, str], Claimant]:
    """Objects claimed by each active rollout, for conflict checks without API calls.
    It sees every stored version of every rollout, so it also keeps the gauges."""
    if namespace is None:
        return {}
    telemetry.record_state(namespace, name, dict(status))
    claimed: list[tuple[ObjectRef, Claimant]] = claims_of(name, meta, spec, status)
    return {(namespace, ref.kind, ref.name): me for ref, me in claimed}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def wake_on_change(body: kopf.Body, memo: kopf.Memo, type: str, **_: Any) -> None:
    """Wake the daemon for a new generation or action, not for our own status writes."""
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    if type == "DELETED":
        telemetry.forget(namespace, name)
        memo.driven.discard(str(body.metadata.uid))
        memo.adapters.versions.pop(str(body.metadata.uid), None)
        forget_wake(memo, namespace, name)
        return
    key = (body.metadata.get("generation"), body.metadata.annotations.get(ACTION_ANNOTATION))
    seen: dict[tuple[str, str], Any] = memo.seen
    if seen.get((namespace, name)) != key:
        seen[(namespace, name)] = key
        wake_event(memo, namespace, name).set()


def _watch_routes(kind: ObjectKind) -> None:
    @kopf.on.event(kind.group, kind.version, kind.plural)
    async def wake_claimants(
        body: kopf.Body, memo: kopf.Memo, namespace: str | None, type: str, **kwargs: Any
    ) -> None:
        """A routing object changed: keep it for the reads of the next pass, and wake
        the rollouts that drive it, so a write by someone else (a GitOps sync, a
        person) is reasserted at once instead of at the next tick."""
        memo.adapters.objects.seen(kind, dict(body), deleted=type == "DELETED")
        claims: kopf.Index[tuple[str, str, str], Claimant] = kwargs["rollout_claims"]
        for claimant in claims.get((str(namespace), kind.kind, str(body.metadata.name)), ()):
            wake_event(memo, str(namespace), claimant.name).set()


for _kind in routing_kinds():
    _watch_routes(_kind)


def _watch_reads(kind: ObjectKind) -> None:
    @kopf.on.event(kind.group, kind.version, kind.plural)
    async def keep_for_reads(body: kopf.Body, memo: kopf.Memo, type: str, **_: Any) -> None:
        """Every pass reads its Deployments and drift reference: from the watch, a pass
        makes no API call for them while they are unchanged."""
        memo.adapters.objects.seen(kind, dict(body), deleted=type == "DELETED")


for _kind in (DEPLOYMENT, CONFIG_MAP):
    _watch_reads(_kind)


# The backoff lets a stopped daemon finish its pass (and, on deletion, give traffic
# back to the stable) before kopf cancels it.
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    initial_delay=0,
    cancellation_backoff=20,
    cancellation_timeout=10,
    when=lambda body, **_: needs_driving(body),
)
async def drive_rollout(
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Logger,
    **kwargs: Any,
) -> None:
    uid = str(body.metadata.uid)
    memo.driven.add(uid)
    deleted = False
    try:
        claims = kwargs["rollout_claims"]
        wake = wake_event(memo, str(body.metadata.namespace), str(body.metadata.name))
        deleted = await drive(memo.adapters, body, claims, wake, stopped, logger)
    finally:
        if not deleted:  # a deleted one stays until the object is gone (wake_on_change)
            memo.driven.discard(uid)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def release_undriven(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """A rollout deleted while no operator ran: kopf starts no daemon for a resource
    already being deleted, so the daemon's release never comes; this gives the traffic
    back instead. `optional`: it adds no finalizer of its own (the daemon's is enough).
    kopf may call it again while the daemon winds down, so it keys on the daemon."""
    if str(body.metadata.uid) not in memo.driven:
        await release(memo.adapters, body, logger)
