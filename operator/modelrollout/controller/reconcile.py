"""One reconcile pass: observe, call the pure `step`, persist, act.

Order matters for restart safety. A consumed action annotation is removed first
(a crash then loses the action rather than applying it twice); the status is
written next; only then do routers and Events act. A crash after the status write
is repaired by the next pass, which sees the route differ from the status and
re-applies it, and never posts an Event twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from modelrollout import telemetry
from modelrollout.api.objects import CONFIG_MAP, DEPLOYMENT, SERVICE, ObjectRef
from modelrollout.api.resource import ACTION_ANNOTATION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus
from modelrollout.controller import analysis, checks
from modelrollout.controller.adapters import Adapters
from modelrollout.controller.notifications import (
    health,
    own_receivers,
    rollout_receivers,
    send,
)
from modelrollout.core.context import StageContext, stage_context
from modelrollout.core.machine import reject_spec, route_target, step
from modelrollout.core.phases import analysis_due, awaiting_start, ended, release_target
from modelrollout.core.targets import claim_conflicts, claimant_of, claimed_objects, routing_object
from modelrollout.core.types import (
    ConsumeAction,
    Decision,
    EmitEvent,
    Judgement,
    Observations,
    RunCheck,
    Scale,
    SetRoute,
    StopCheck,
    Workload,
)
from modelrollout.egress import AddressNotAllowed
from modelrollout.kube.client import is_conflict, is_not_found
from modelrollout.kube.status import read_rollout, remove_annotation, write_status
from modelrollout.ports import Manifest, MetricsSource, Snapshot
from modelrollout.routers import router_for
from modelrollout.routers.mesh import RouteProblem
from modelrollout.routers.replicas import scale

Logger = logging.Logger | logging.LoggerAdapter[Any]
ClaimsIndex = Mapping[tuple[str, str, str], Any]

CONFLICT_RETRY_SECONDS = 1.0
LAST_DELIVERY_SECONDS = 15.0  # an ended rollout's last notifications, retries included


def workload(deployment: Manifest | None) -> Workload | None:
    if deployment is None:
        return None
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    return Workload(
        replicas=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)),
        available=int(status.get("availableReplicas", 0)),
    )


async def reconcile(
    adapters: Adapters, body: kopf.Body, claims: ClaimsIndex, logger: Logger
) -> float:
    """Run one pass over a rollout; return the seconds until the next one is due.

    The pass never works on a version older than its own last write: a pass on the
    status before that write would undo it (restore the weight a rollback just
    removed). kopf's `body` is used when it is exactly the version this daemon last
    wrote or read; else (the watch has not caught up, or someone else wrote) the
    rollout is read afresh."""
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    uid = str(body.metadata.uid)
    known = adapters.versions.get(uid)
    if known is not None and known == body.metadata.get("resourceVersion"):
        rollout: Manifest | None = dict(body)
    else:
        rollout = await _read_own(adapters, namespace, name, uid)
    if rollout is None:
        return CONFLICT_RETRY_SECONDS  # deleted or replaced: kopf stops this daemon
    generation = int(rollout["metadata"].get("generation", 0))
    raw_status: dict[str, Any] = dict(rollout.get("status") or {})
    status = ModelRolloutStatus.model_validate(raw_status)
    now = datetime.now(UTC)
    spec: ModelRolloutSpec | None = None
    observations = Observations(generation)
    try:
        spec = ModelRolloutSpec.model_validate(rollout.get("spec") or {})
    except ValidationError as error:
        decision = reject_spec(status, generation, _problems(error), now)
    else:
        observations = await _observe(adapters, rollout, spec, status, claims, generation, now)
        # The decision is dated when the evidence is in, not when the pass began: a
        # pass that waited on a slow Prometheus would otherwise start the next stage
        # in the past, and that stage would be over soon after its weight was set.
        decision = step(spec, status, observations, datetime.now(UTC))
    try:
        adapters.versions[uid] = await _persist(
            adapters, namespace, name, rollout, raw_status, decision
        )
    except Exception as error:
        adapters.versions.pop(uid, None)
        if is_conflict(error):
            logger.info("the rollout changed while reconciling; retrying with the new version")
            return CONFLICT_RETRY_SECONDS
        raise
    telemetry.record_pass(namespace, name, observations.metrics, decision.rollback)
    await _act(adapters, rollout, body, spec, decision, logger)
    if decision.notices and spec is not None:
        receivers = adapters.receivers + await rollout_receivers(
            adapters.objects, namespace, name, spec
        )
        for notice in decision.notices:
            send(adapters.notifier, receivers, rollout, decision.status, notice)
        if ended(decision.status) and spec.notifications:
            await _record_last_deliveries(adapters, namespace, name, uid, spec, decision, logger)
    return decision.requeue_after or CONFLICT_RETRY_SECONDS


async def _record_last_deliveries(
    adapters: Adapters,
    namespace: str,
    name: str,
    uid: str,
    spec: ModelRolloutSpec,
    decision: Decision,
    logger: Logger,
) -> None:
    """Status shows receivers' health as of the pass before; an ended rollout has no
    later pass, so its last notifications' outcome is written here, once they are
    delivered or have failed (bounded: a dead receiver cannot hold the pass)."""
    own = own_receivers(namespace, name, spec)
    await adapters.notifier.settled(own, LAST_DELIVERY_SECONDS)
    seen = health(adapters.notifier, namespace, name, spec, adapters.receivers)
    if list(seen) == list(decision.status.notifications):
        return
    before, after = (
        decision.status.to_wire(),
        decision.status.model_copy(update={"notifications": list(seen)}).to_wire(),
    )
    version = adapters.versions[uid]
    for _ in range(3):
        try:
            stored = await write_status(adapters.kube, namespace, name, version, before, after)
            adapters.versions[uid] = str(stored["metadata"]["resourceVersion"])
            return
        except Exception as error:
            adapters.versions.pop(uid, None)
            if not is_conflict(error):
                logger.info("receivers' last deliveries not recorded: %s", error)
                return
        # kopf dropping its finalizer from an ended rollout bumps the version; only a
        # status still as this pass wrote it may take the deliveries on top
        try:
            current = await _read_own(adapters, namespace, name, uid)
        except Exception as error:
            logger.info("receivers' last deliveries not recorded: %s", error)
            return
        if current is None or (current.get("status") or {}) != before:
            logger.info("receivers' last deliveries not recorded: the rollout moved on")
            return
        version = str(current["metadata"]["resourceVersion"])


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
    )


async def _read_own(adapters: Adapters, namespace: str, name: str, uid: str) -> Manifest | None:
    """The stored rollout, or None once it is gone or a new object took its name."""
    try:
        rollout = await read_rollout(adapters.kube, namespace, name)
    except Exception as error:
        if is_not_found(error):
            return None
        raise
    return rollout if rollout["metadata"].get("uid") == uid else None


async def _persist(
    adapters: Adapters,
    namespace: str,
    name: str,
    rollout: Mapping[str, Any],
    raw_status: dict[str, Any],
    decision: Decision,
) -> str:
    """Consume the action annotation, then write the status, each guarded by the
    resourceVersion; return the version stored last. A conflict caused by metadata
    alone (kopf adding its finalizer, say) is retried on the fresh version: the spec
    and status the decision came from are unchanged. Anything else is not: the pass is
    recomputed from the new version."""
    kube, metadata = adapters.kube, rollout["metadata"]
    version = str(metadata.get("resourceVersion"))
    consume = next((a.name for a in decision.actions if isinstance(a, ConsumeAction)), None)
    for attempt in range(3):
        try:
            if consume is not None:
                version = await remove_annotation(kube, namespace, name, version, ACTION_ANNOTATION)
                consume = None
            if decision.changed:
                new_status = decision.status.to_wire()
                written = await write_status(kube, namespace, name, version, raw_status, new_status)
                version = str(written["metadata"]["resourceVersion"])
            return version
        except Exception as error:
            if not is_conflict(error) or attempt == 2:
                raise
            current = await read_rollout(kube, namespace, name)
            annotations = current["metadata"].get("annotations") or {}
            unchanged = (
                current["metadata"].get("generation") == metadata.get("generation")
                and (current.get("status") or {}) == raw_status
            )
            if not unchanged or (consume and annotations.get(ACTION_ANNOTATION) != consume):
                raise
            version = str(current["metadata"]["resourceVersion"])
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _observe(
    adapters: Adapters,
    rollout: Manifest,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    claims: ClaimsIndex,
    generation: int,
    now: datetime,
) -> Observations:
    metadata = rollout["metadata"]
    namespace = str(metadata["namespace"])
    objects = adapters.objects
    stable, candidate = await asyncio.gather(
        objects.get(DEPLOYMENT, namespace, spec.stable.deployment),
        objects.get(DEPLOYMENT, namespace, spec.candidate.deployment),
    )
    snapshot = Snapshot(stable, candidate)
    router = router_for(spec, objects, namespace)
    route = await router.observe(route_target(spec, status), snapshot)
    missing: list[str] = []
    conflicts: list[str] = []
    tick: analysis.TickAnalysis | None = None
    judgement: Judgement | None = None
    judged_now = analysis_due(spec, status) or awaiting_start(status)
    if judged_now and spec.analysis is not None:
        context = stage_context(spec, status, namespace, now, rollout=str(metadata["name"]))
        try:
            source = await adapters.connections.source(spec.analysis.prometheus, namespace)
        except AddressNotAllowed as error:
            judgement = Judgement("invalid", "AddressNotAllowed", str(error))
        else:
            tick, judgement = await _judge(adapters, context, status, source)
    seen_checks = await checks.observe(adapters, rollout, spec, status)
    if awaiting_start(status):
        missing = await _missing_before_start(adapters, namespace, spec, snapshot, route is None)
        me = claimant_of(str(metadata["name"]), metadata, rollout.get("status") or {})
        claimants = {
            ref: list(claims.get((namespace, ref.kind, ref.name), ()))
            for ref in claimed_objects(spec)
        }
        conflicts = claim_conflicts(me, claimed_objects(spec), claimants)
    return Observations(
        generation=generation,
        missing=tuple(missing),
        conflicts=tuple(conflicts),
        stable=workload(stable),
        candidate=workload(candidate),
        route=route,
        judgement=judgement,
        action=(metadata.get("annotations") or {}).get(ACTION_ANNOTATION),
        metrics=tuple(tick.outcome.metrics) if tick else None,
        samples=tick.outcome.samples if tick else None,
        analysis_errors=tick.outcome.errors if tick else None,
        drift=tick.drift if tick else None,
        checks=seen_checks,
        notifications=health(
            adapters.notifier, namespace, str(metadata["name"]), spec, adapters.receivers
        ),
    )


async def _judge(
    adapters: Adapters, context: StageContext, status: ModelRolloutStatus, source: MetricsSource
) -> tuple[analysis.TickAnalysis | None, Judgement | None]:
    """Preflight before stage 1, else this stage's analysis and drift gate."""
    if awaiting_start(status):
        return None, await analysis.preflight(context, source, adapters.references)
    tick = await analysis.observe(
        context, status.analysis, status.analysis_errors, status.drift, source,
        adapters.references,
    )  # fmt: skip
    return tick, tick.judgement


async def _missing_before_start(
    adapters: Adapters,
    namespace: str,
    spec: ModelRolloutSpec,
    snapshot: Snapshot,
    route_missing: bool,
) -> list[str]:
    """Everything a rollout needs, named, before it moves any traffic."""
    missing = [
        ObjectRef(DEPLOYMENT.kind, name)
        for name, found in (
            (spec.stable.deployment, snapshot.stable),
            (spec.candidate.deployment, snapshot.candidate),
        )
        if found is None
    ]
    gate = spec.drift_gate
    reference = gate.reference.config_map_ref if gate else None
    needed = [
        *((SERVICE, s) for s in (spec.stable.service, spec.candidate.service) if s),
        *([(CONFIG_MAP, reference.name)] if reference else []),
    ]
    for kind, name in needed:
        if await adapters.objects.get(kind, namespace, name) is None:
            missing.append(ObjectRef(kind.kind, name))
    route = routing_object(spec.traffic_routing)
    if route_missing and route is not None:
        missing.append(route.ref)
    return [str(ref) for ref in missing]


async def _act(
    adapters: Adapters,
    rollout: Manifest,
    body: kopf.Body,
    spec: ModelRolloutSpec | None,
    decision: Decision,
    logger: Logger,
) -> None:
    namespace = str(rollout["metadata"]["namespace"])
    for action in decision.actions:
        if isinstance(action, SetRoute) and spec is not None:
            try:
                await router_for(spec, adapters.objects, namespace).apply(action.target)
            except RouteProblem as problem:
                logger.warning(f"routing not applied: {problem}")
        elif isinstance(action, Scale):
            await scale(adapters.objects, namespace, action.deployment, action.replicas)
        elif isinstance(action, RunCheck) and spec is not None:
            await checks.start(adapters, rollout, spec, action)
        elif isinstance(action, StopCheck) and spec is not None:
            await checks.stop(adapters, rollout, spec, action)
        elif isinstance(action, EmitEvent):
            kopf.event(body, type=action.type, reason=action.reason, message=action.message)
            log = logger.warning if action.type == "Warning" else logger.info
            log(f"{action.reason}: {action.message}")


async def release(adapters: Adapters, body: kopf.Body, logger: Logger) -> None:
    """The rollout is being deleted: give all traffic back to the stable if it was
    mid-flight. Missing targets are not an error; there is nothing left to restore.
    The stored status is read afresh, as in `reconcile`: kopf's may lag our last write."""
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    rollout: Mapping[str, Any] = (
        await _read_own(adapters, namespace, name, str(body.metadata.uid)) or body
    )
    status = ModelRolloutStatus.model_validate(dict(rollout.get("status") or {}))
    target = release_target(status)
    if target is None:
        return
    try:
        spec = ModelRolloutSpec.model_validate(dict(rollout.get("spec") or {}))
    except ValidationError:
        return
    try:
        await router_for(spec, adapters.objects, namespace).apply(target)
    except RouteProblem as problem:
        logger.info(f"nothing to restore on deletion: {problem}")
        return
    except Exception as error:
        if not is_not_found(error):
            raise
        logger.info("nothing to restore on deletion: a target is already gone")
        return
    message = f"deleted at stage {status.stage} ({status.weight}%): the stable serves all traffic"
    kopf.event(body, type="Normal", reason="Released", message=message)
    logger.info(message)
