"""Gate checks' I/O: create, read and stop evaluation Jobs; call webhooks.

What a running attempt amounts to is read here each tick and handed to the core
(core/checks.py), which judges it. A Job attempt whose Job is missing (an operator
killed between writing status and creating the Job) is created again: its name is
fixed per attempt, so this never makes two.
"""

from __future__ import annotations

import asyncio
import json
from base64 import b64decode
from typing import Any

import requests

from modelrollout.api.durations import parse_duration
from modelrollout.api.objects import JOB, POD, SECRET
from modelrollout.api.resource import GROUP, KIND, VERSION
from modelrollout.api.spec import Check, ModelRolloutSpec
from modelrollout.api.status import CheckStatus, ModelRolloutStatus
from modelrollout.controller.adapters import Adapters
from modelrollout.core.checks import (
    POINTS,
    AttemptState,
    checks_at,
    job_name,
    job_state,
    kpis_of,
    running,
)
from modelrollout.core.types import CheckObservation, RunCheck, StopCheck
from modelrollout.egress import AddressNotAllowed, AddressPolicy
from modelrollout.metrics.connections import CREDENTIAL_ADDRESSES
from modelrollout.metrics.prometheus import reason
from modelrollout.ports import Manifest

TTL_AFTER_FINISHED_SECONDS = 3600
MAX_ANSWER_BYTES = 64 * 1024
LABEL = f"{GROUP}/rollout"


async def observe(
    adapters: Adapters, rollout: Manifest, spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> tuple[CheckObservation, ...]:
    """Every running attempt of this run, as it stands now."""
    checks = {(point, c.name): c for point in POINTS for c in checks_at(spec.checks, point)}
    seen = await asyncio.gather(
        *(
            _observe_one(adapters, rollout, spec, status, entry, checks[(entry.point, entry.name)])
            for entry in running(status.checks)
            if (entry.point, entry.name) in checks
        )
    )
    return tuple(seen)


async def _observe_one(
    adapters: Adapters,
    rollout: Manifest,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    entry: CheckStatus,
    check: Check,
) -> CheckObservation:
    if check.webhook is not None:
        state, message = await _call(adapters, rollout, spec, status, entry, check)
        return CheckObservation(entry.point, entry.name, entry.attempt, state, message)
    namespace = rollout["metadata"]["namespace"]
    name = job_name(rollout["metadata"]["name"], entry.point, entry.name, entry.attempt)
    logs = f"kubectl logs -n {namespace} job/{name}"
    job = await adapters.objects.get(JOB, namespace, name)
    if job is None:
        await start(adapters, rollout, spec, RunCheck(entry.point, check, entry.attempt))
        return CheckObservation(entry.point, entry.name, entry.attempt, "running", job=name)
    state, said = job_state(job)
    if state == "failed":
        why = reason(f"Job {name} failed: {said}")
        return CheckObservation(
            entry.point, entry.name, entry.attempt, "failed", why, job=name, logs=logs
        )
    if state == "running":
        return CheckObservation(entry.point, entry.name, entry.attempt, "running", job=name)
    kpis = kpis_of(await adapters.objects.list(POD, namespace, f"job-name={name}"))
    return CheckObservation(
        entry.point, entry.name, entry.attempt, "succeeded", f"Job {name} succeeded",
        kpis=kpis, job=name, logs=logs,
    )  # fmt: skip


async def start(
    adapters: Adapters, rollout: Manifest, spec: ModelRolloutSpec, run: RunCheck
) -> None:
    """Create the attempt's Job (a webhook is called when it is next observed)."""
    check = run.check
    if check.job is None:
        return
    metadata = rollout["metadata"]
    name = job_name(metadata["name"], run.point, check.name, run.attempt)
    body: dict[str, Any] = check.job.template.to_wire()
    body.setdefault("ttlSecondsAfterFinished", TTL_AFTER_FINISHED_SECONDS)
    pod = body["template"].setdefault("spec", {})
    context = _environment(metadata, spec, run)
    for container in pod.get("containers") or []:
        container["env"] = [*(container.get("env") or []), *context]
    labels = {LABEL: metadata["name"], f"{GROUP}/check": check.name}
    manifest = {
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": body,
    }
    await adapters.objects.apply(JOB, manifest)


async def stop(adapters: Adapters, rollout: Manifest, run: StopCheck) -> None:
    if run.check.job is None:
        return
    metadata = rollout["metadata"]
    name = job_name(metadata["name"], run.point, run.check.name, run.attempt)
    await adapters.objects.delete(JOB, metadata["namespace"], name)


def _environment(metadata: Manifest, spec: ModelRolloutSpec, run: RunCheck) -> list[dict[str, str]]:
    values = {
        "MODELROLLOUT_NAMESPACE": metadata["namespace"],
        "MODELROLLOUT_NAME": metadata["name"],
        "MODELROLLOUT_CHECK": run.check.name,
        "MODELROLLOUT_CHECK_POINT": run.point,
        "MODELROLLOUT_STABLE_DEPLOYMENT": spec.stable.deployment,
        "MODELROLLOUT_CANDIDATE_DEPLOYMENT": spec.candidate.deployment,
        "MODELROLLOUT_STABLE_VERSION": spec.stable.model_version or "",
        "MODELROLLOUT_CANDIDATE_VERSION": spec.candidate.model_version or "",
    }
    return [{"name": k, "value": v} for k, v in values.items()]


async def _call(
    adapters: Adapters,
    rollout: Manifest,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    entry: CheckStatus,
    check: Check,
) -> tuple[AttemptState, str]:
    """POST the rollout's context; 2xx passes, with the answer's `reason` if it has one."""
    webhook = check.webhook
    assert webhook is not None
    namespace = rollout["metadata"]["namespace"]
    policy = adapters.connections.policy
    try:
        url = webhook.url or await _secret_url(adapters, namespace, webhook.url_secret_ref)
    except (LookupError, ValueError, AddressNotAllowed) as error:
        return "failed", reason(error)
    payload = _context(rollout, spec, status, entry)
    timeout = parse_duration(webhook.timeout).total_seconds()
    loop = asyncio.get_running_loop()
    try:
        code, said = await loop.run_in_executor(
            adapters.connections.pool, _post, policy, url, payload, timeout
        )
    except (requests.RequestException, OSError) as error:
        return "failed", reason(f"webhook unreachable: {type(error).__name__}: {error}")
    text = reason(f"HTTP {code}" + (f": {said}" if said else ""))
    return ("succeeded" if 200 <= code < 300 else "failed"), text


async def _secret_url(adapters: Adapters, namespace: str, ref: Any) -> str:
    secret = await adapters.objects.get(SECRET, namespace, ref.name)
    if secret is None:
        raise LookupError(f"Secret {ref.name} not found")
    data = (secret.get("data") or {}).get(ref.key)
    if data is None:
        raise LookupError(f"Secret {ref.name} has no key {ref.key}")
    url = b64decode(data).decode().strip()
    bound = ((secret.get("metadata") or {}).get("annotations") or {}).get(CREDENTIAL_ADDRESSES)
    if bound is not None:
        loop = asyncio.get_running_loop()
        only = AddressPolicy.parse(bound)
        await loop.run_in_executor(adapters.connections.pool, only.check_url, url)
    return url


def _post(policy: AddressPolicy, url: str, payload: Manifest, timeout: float) -> tuple[int, str]:
    policy.check_url(url)
    with (
        policy.session() as session,
        session.post(url, json=payload, timeout=timeout, stream=True) as response,
    ):
        raw = response.raw.read(MAX_ANSWER_BYTES, decode_content=True)
    try:
        said = json.loads(raw).get("reason")
    except (ValueError, AttributeError):
        said = None
    return response.status_code, str(said) if said else ""


def _context(
    rollout: Manifest, spec: ModelRolloutSpec, status: ModelRolloutStatus, entry: CheckStatus
) -> Manifest:
    metadata = rollout["metadata"]
    wire = status.to_wire()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRolloutCheck",
        "check": {"point": entry.point, "name": entry.name, "attempt": entry.attempt},
        "rollout": {k: metadata.get(k) for k in ("namespace", "name", "uid")},
        "stable": spec.stable.to_wire(),
        "candidate": spec.candidate.to_wire(),
        "stage": status.stage,
        "stageCount": status.stage_count,
        "weight": status.weight,
        "phase": status.phase,
        "analysis": wire.get("analysis", []),
        "drift": wire.get("drift"),
    }
