"""Gate checks' I/O: create, read and stop evaluation Jobs; call webhooks.

What a running attempt amounts to is read here each tick and handed to the core
(core/checks.py), which judges it. A Job attempt whose Job is missing (an operator
killed between writing status and creating the Job) is created again: its name is
fixed per attempt, so this never makes two. A Job or Secret the API server refuses
(invalid, forbidden) fails the attempt with the server's reason.
"""

from __future__ import annotations

import asyncio
import json
from base64 import b64decode
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from kubernetes.client.exceptions import ApiException

from modelrollout.api.durations import parse_duration
from modelrollout.api.objects import JOB, POD, SECRET
from modelrollout.api.resource import GROUP, KIND, VERSION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus
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
from modelrollout.core.types import CheckAttempt, CheckObservation, RunCheck, StopCheck
from modelrollout.egress import AddressNotAllowed, AddressPolicy
from modelrollout.metrics.connections import CREDENTIAL_ADDRESSES
from modelrollout.metrics.prometheus import reason
from modelrollout.ports import Manifest

TTL_AFTER_FINISHED_SECONDS = 3600
MAX_ANSWER_BYTES = 64 * 1024
LABEL = f"{GROUP}/rollout"


@dataclass(frozen=True)
class _Attempt:
    """A running attempt with what its I/O needs."""

    rollout: Manifest
    spec: ModelRolloutSpec
    status: ModelRolloutStatus
    run: CheckAttempt

    @property
    def namespace(self) -> str:
        return str(self.rollout["metadata"]["namespace"])

    @property
    def job(self) -> str:
        run = self.run
        rollout = self.rollout["metadata"]["name"]
        return job_name(rollout, run.point, run.check.name, run.attempt, run.started_at)

    def seen(self, state: AttemptState, message: str = "", **extra: Any) -> CheckObservation:
        run = self.run
        return CheckObservation(run.point, run.check.name, run.attempt, state, message, **extra)


async def observe(
    adapters: Adapters, rollout: Manifest, spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> tuple[CheckObservation, ...]:
    """Every running attempt of this run, as it stands now."""
    checks = {(point, c.name): c for point in POINTS for c in checks_at(spec.checks, point)}
    attempts = [
        _Attempt(
            rollout, spec, status,
            CheckAttempt(e.point, checks[(e.point, e.name)], e.attempt, e.started_at),
        )
        for e in running(status)
        if (e.point, e.name) in checks
    ]  # fmt: skip
    return tuple(await asyncio.gather(*(_observe_one(adapters, a) for a in attempts)))


async def _observe_one(adapters: Adapters, attempt: _Attempt) -> CheckObservation:
    if attempt.run.check.webhook is not None:
        return attempt.seen(*await _call(adapters, attempt))
    name, logs = attempt.job, f"kubectl logs -n {attempt.namespace} job/{attempt.job}"
    job = await adapters.objects.get(JOB, attempt.namespace, name)
    if job is None:
        refused = await _create(adapters, attempt)
        if refused is None:
            return attempt.seen("running", job=name)
        return attempt.seen("failed", reason(f"Job {name} not created: {refused}"), job=name)
    state, said = job_state(job)
    if state == "failed":
        return attempt.seen("failed", reason(f"Job {name} failed: {said}"), job=name, logs=logs)
    if state == "running":
        return attempt.seen("running", job=name)
    # the Job's own pods, by its uid: never a pod of an earlier Job of the same name
    uid = job["metadata"]["uid"]
    pods = await adapters.objects.list(
        POD, attempt.namespace, f"batch.kubernetes.io/controller-uid={uid}"
    )
    kpis = kpis_of(pods)
    return attempt.seen("succeeded", f"Job {name} succeeded", kpis=kpis, job=name, logs=logs)


async def start(
    adapters: Adapters, rollout: Manifest, spec: ModelRolloutSpec, action: RunCheck
) -> None:
    """Create the attempt's Job (a webhook is called when it is next observed). A Job
    the API server refuses is left to the next observation, which reports why."""
    if action.run.check.job is not None:
        await _create(adapters, _Attempt(rollout, spec, ModelRolloutStatus(), action.run))


async def _create(adapters: Adapters, attempt: _Attempt) -> str | None:
    """Server-side apply the attempt's Job; the API server's reason if it refused."""
    check, rollout = attempt.run.check, attempt.rollout
    assert check.job is not None
    metadata = rollout["metadata"]
    body: dict[str, Any] = check.job.template.to_wire()
    body.setdefault("ttlSecondsAfterFinished", TTL_AFTER_FINISHED_SECONDS)
    pod = body["template"].setdefault("spec", {})
    context = _environment(attempt)
    for container in pod.get("containers") or []:
        container["env"] = [*(container.get("env") or []), *context]
    labels = {LABEL: metadata["name"], f"{GROUP}/check": check.name}
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": metadata["name"],
             "uid": metadata["uid"]}  # fmt: skip
    manifest = {
        "metadata": {
            "name": attempt.job,
            "namespace": attempt.namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": body,
    }
    try:
        await adapters.objects.apply(JOB, manifest)
    except ApiException as error:
        refused = _refusal(error)
        if refused is None:
            raise
        return refused
    return None


def _refusal(error: ApiException) -> str | None:
    """What the API server said, when it refused the request itself (a 4xx other than
    a timeout, conflict or throttling): no retry of the same request would do better."""
    status = error.status if isinstance(error.status, int) else 0
    if not 400 <= status < 500 or status in (408, 409, 429):
        return None
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason or f"HTTP {error.status}")


async def stop(
    adapters: Adapters, rollout: Manifest, spec: ModelRolloutSpec, action: StopCheck
) -> None:
    if action.run.check.job is None:
        return
    attempt = _Attempt(rollout, spec, ModelRolloutStatus(), action.run)
    await adapters.objects.delete(JOB, attempt.namespace, attempt.job)


def _environment(attempt: _Attempt) -> list[dict[str, str]]:
    spec, run = attempt.spec, attempt.run
    values = {
        "MODELROLLOUT_NAMESPACE": attempt.namespace,
        "MODELROLLOUT_NAME": attempt.rollout["metadata"]["name"],
        "MODELROLLOUT_CHECK": run.check.name,
        "MODELROLLOUT_CHECK_POINT": run.point,
        "MODELROLLOUT_STABLE_DEPLOYMENT": spec.stable.deployment,
        "MODELROLLOUT_CANDIDATE_DEPLOYMENT": spec.candidate.deployment,
        "MODELROLLOUT_STABLE_VERSION": spec.stable.model_version or "",
        "MODELROLLOUT_CANDIDATE_VERSION": spec.candidate.model_version or "",
    }
    return [{"name": k, "value": v} for k, v in values.items()]


async def _call(adapters: Adapters, attempt: _Attempt) -> tuple[AttemptState, str]:
    """POST the rollout's context; 2xx passes, with the answer's `reason` if it has one."""
    webhook = attempt.run.check.webhook
    assert webhook is not None
    policy = adapters.connections.policy
    try:
        url = webhook.url or await _secret_url(adapters, attempt.namespace, webhook.url_secret_ref)
    except (LookupError, ValueError) as error:
        return "failed", reason(error)
    payload = _context(attempt)
    timeout = parse_duration(webhook.timeout).total_seconds()
    loop = asyncio.get_running_loop()
    try:
        code, said = await loop.run_in_executor(
            adapters.connections.pool, _post, policy, url, payload, timeout
        )
    except AddressNotAllowed as error:
        return "failed", _not_allowed(url, error)
    except requests.Timeout:
        return "failed", f"webhook did not answer within {webhook.timeout}"
    except (requests.RequestException, OSError) as error:
        return "failed", reason(f"webhook unreachable: {type(error).__name__}: {error}")
    text = reason(f"HTTP {code}" + (f": {said}" if said else ""))
    return ("succeeded" if 200 <= code < 300 else "failed"), text


async def _secret_url(adapters: Adapters, namespace: str, ref: Any) -> str:
    try:
        secret = await adapters.objects.get(SECRET, namespace, ref.name)
    except ApiException as error:
        refused = _refusal(error)
        if refused is None:
            raise
        raise LookupError(f"Secret {ref.name} not readable: {refused}") from None
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
        try:
            await loop.run_in_executor(adapters.connections.pool, only.check_url, url)
        except AddressNotAllowed as error:
            raise LookupError(f"Secret {ref.name}: {_not_allowed(url, error)}") from None
    return url


def _not_allowed(url: str, error: AddressNotAllowed) -> str:
    """The allowlist's sentence, led by the host it refused (it names the address
    only when a name resolved to it)."""
    host = urlsplit(url).hostname or url
    said = str(error)
    return reason(
        f"webhook URL not allowed: {said if said.startswith(host) else f'{host}, {said}'}"
    )


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


def _context(attempt: _Attempt) -> Manifest:
    metadata, status, run = attempt.rollout["metadata"], attempt.status, attempt.run
    wire = status.to_wire()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRolloutCheck",
        "check": {"point": run.point, "name": run.check.name, "attempt": run.attempt},
        "rollout": {k: metadata.get(k) for k in ("namespace", "name", "uid")},
        "stable": attempt.spec.stable.to_wire(),
        "candidate": attempt.spec.candidate.to_wire(),
        "stage": status.stage,
        "stageCount": status.stage_count,
        "weight": status.weight,
        "phase": status.phase,
        "analysis": wire.get("analysis", []),
        "drift": wire.get("drift"),
    }
