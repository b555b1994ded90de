"""The only kopf decorators in the project.

One daemon per ModelRollout drives it; several change handlers on one object can
lose update events (kopf #1072, #1178). A cheap event handler wakes the daemon
when the spec or the action annotation changes, so it does not wait a full
interval to notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from pydantic import ValidationError

from modelrollout import telemetry
from modelrollout.api.resource import ACTION_ANNOTATION, FINALIZER, GROUP, PLURAL, VERSION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import TERMINAL_PHASES
from modelrollout.controller.analysis import MetricsSources
from modelrollout.controller.reconcile import Logger, claimant_of, reconcile, release
from modelrollout.core.machine import PREFLIGHT_REASONS
from modelrollout.core.targets import Claimant, claimed_objects
from modelrollout.kube.client import Kube

ERROR_BACKOFF_SECONDS = 5.0
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
    memo.kube = Kube.from_environment()
    memo.driven = set()  # uids of rollouts whose daemon here runs or released them
    memo.sources = MetricsSources(memo.kube, ThreadPoolExecutor(8, thread_name_prefix="prometheus"))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for resource in ("sources", "kube"):
        if memo.get(resource) is not None:
            memo[resource].close()


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
    if namespace is not None:
        telemetry.record_state(namespace, name, dict(status))
    if namespace is None or status.get("phase") in TERMINAL_PHASES:
        return {}
    try:
        parsed = ModelRolloutSpec.model_validate(dict(spec))
    except ValidationError:
        return {}
    me = claimant_of(name, meta, status)
    return {(namespace, ref.kind, ref.name): me for ref in claimed_objects(parsed)}


def _wake_event(memo: kopf.Memo) -> asyncio.Event:
    if "wake" not in memo:
        memo.wake = asyncio.Event()
    event: asyncio.Event = memo.wake
    return event


@kopf.on.event(GROUP, VERSION, PLURAL)
async def wake_on_change(body: kopf.Body, memo: kopf.Memo, type: str, **_: Any) -> None:
    """Wake the daemon for a new generation or action, not for our own status writes."""
    if type == "DELETED":
        telemetry.forget(str(body.metadata.namespace), str(body.metadata.name))
        memo.driven.discard(str(body.metadata.uid))
        return
    key = (body.metadata.get("generation"), body.metadata.annotations.get(ACTION_ANNOTATION))
    if memo.get("seen") != key:
        memo.seen = key
        _wake_event(memo).set()


def needs_driving(body: kopf.Body, **_: Any) -> bool:
    """Whether a rollout needs its daemon (and so kopf's finalizer).

    A finished rollout with nothing left to do has neither, so uninstalling the
    operator never leaves finished rollouts undeletable. A spec change or an action
    annotation brings the daemon back.
    """
    status = body.get("status") or {}
    if status.get("phase") not in TERMINAL_PHASES:
        return True
    if body.metadata.annotations.get(ACTION_ANNOTATION):
        return True
    if status.get("observedGeneration") != body.metadata.get("generation"):
        return True
    conditions: list[dict[str, Any]] = status.get("conditions", [])
    stalled = next((c for c in conditions if c.get("type") == "Stalled"), {})
    if status.get("phase") == "Failed" and stalled.get("reason") in PREFLIGHT_REASONS:
        return True
    return _scale_down_pending(body.spec, status)


def _scale_down_pending(spec: kopf.Spec, status: Mapping[str, Any]) -> bool:
    side = {"Succeeded": "stable", "RolledBack": "candidate"}.get(status.get("phase", ""))
    if side is None or status.get("scaledDown"):
        return False
    return bool((spec.get(side) or {}).get("scaleDownDelay"))


# The backoff lets a stopped daemon finish its pass (and, on deletion, give traffic
# back to the stable) before kopf cancels it.
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    initial_delay=0,
    cancellation_backoff=20,
    cancellation_timeout=10,
    when=needs_driving,
)
async def drive_rollout(
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Logger,
    **kwargs: Any,
) -> None:
    claims: kopf.Index[tuple[str, str, str], Claimant] = kwargs["rollout_claims"]
    wake = _wake_event(memo)
    driven: set[str] = memo.driven
    uid = str(body.metadata.uid)
    driven.add(uid)
    deleted = False
    try:
        while not stopped:
            wake.clear()
            try:
                with telemetry.timed(telemetry.RECONCILE):
                    delay = await reconcile(memo.kube, memo.sources, body, claims, logger)
            except Exception:
                telemetry.RECONCILE_ERRORS.inc()
                logger.exception("reconcile failed; retrying in %.0fs", ERROR_BACKOFF_SECONDS)
                delay = ERROR_BACKOFF_SECONDS
            await _sleep(stopped, wake, delay)
        # after the last pass, so no write of this daemon can follow the release
        reason = stopped.reason or kopf.DaemonStoppingReason(0)
        deleted = kopf.DaemonStoppingReason.RESOURCE_DELETED in reason
        if deleted:
            await release(memo.kube, body, logger)
        if kopf.DaemonStoppingReason.OPERATOR_PAUSING in reason:
            telemetry.forget_states()  # a peer of higher priority took over
    finally:
        if not deleted:  # a deleted one stays until the object is gone (wake_on_change)
            driven.discard(uid)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def release_undriven(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """A rollout deleted while no operator ran: kopf starts no daemon for a resource
    already being deleted, so the daemon's release never comes; this gives the traffic
    back instead. `optional`: it adds no finalizer of its own (the daemon's is enough).
    kopf may call it again while the daemon winds down, so it keys on the daemon."""
    if str(body.metadata.uid) not in memo.driven:
        await release(memo.kube, body, logger)


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, delay: float) -> None:
    waiters = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
