"""Notifications' I/O: which receivers a rollout has (the operator's, from a file,
and its own, from Secrets), sending a transition to them, and their health for
status. Sending never waits: the notifier queues and delivers in the background."""

from __future__ import annotations

import logging
from base64 import b64decode
from collections.abc import Iterable
from pathlib import Path

import yaml

from modelrollout.api.objects import SECRET
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, ReceiverStatus
from modelrollout.core.types import Notify
from modelrollout.notify import Notification, Notifier, Receiver, ReceiverHealth, promote_command
from modelrollout.ports import Manifest, Objects

ENVIRONMENT = "MODELROLLOUT_RECEIVERS"
log = logging.getLogger("modelrollout.notifications")


def operator_receivers(path: str | None) -> list[Receiver]:
    """The operator's own receivers: a YAML list of {name, type, url, events} in a
    file (the chart mounts it from a Secret). A bad file stops the operator's start."""
    if not path:
        return []
    entries = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of receivers")
    receivers = []
    for entry in entries:
        events = entry.get("events")
        receivers.append(
            Receiver(
                name=str(entry.get("name", "")),
                type=entry.get("type"),
                url=str(entry.get("url", "")),
                events=frozenset(events) if events else None,
            )
        )
    return receivers


async def rollout_receivers(
    objects: Objects, namespace: str, name: str, spec: ModelRolloutSpec
) -> list[Receiver]:
    """The rollout's own receivers, with their URLs read from Secrets now; one whose
    Secret is missing or wrong is skipped, and said in the log."""
    found = []
    for declared in spec.notifications:
        ref = declared.url_secret_ref
        secret = await objects.get(SECRET, namespace, ref.name)
        data = ((secret or {}).get("data") or {}).get(ref.key)
        if data is None:
            log.warning("receiver %s: Secret %s has no key %s", declared.name, ref.name, ref.key)
            continue
        try:
            found.append(
                Receiver(
                    name=_own(namespace, name, declared.name),
                    type=declared.type,
                    url=b64decode(data).decode().strip(),
                    events=frozenset(declared.events) if declared.events else None,
                )
            )
        except ValueError as error:
            log.warning("receiver %s: %s", declared.name, error)
    return found


def _own(namespace: str, rollout: str, receiver: str) -> str:
    return f"{namespace}/{rollout}/{receiver}"


def send(
    notifier: Notifier,
    receivers: Iterable[Receiver],
    rollout: Manifest,
    status: ModelRolloutStatus,
    notice: Notify,
) -> None:
    metadata = rollout["metadata"]
    namespace, name = str(metadata["namespace"]), str(metadata["name"])
    details = dict(notice.details)
    if notice.event == "AwaitingApproval":
        details["command"] = promote_command(namespace, name)
    notification = Notification(
        id=f"{metadata['uid']}/{notice.sequence}",
        event=notice.event,
        namespace=namespace,
        name=name,
        stage=status.stage,
        stage_count=status.stage_count,
        weight=status.weight,
        phase=status.phase,
        reason=notice.reason,
        message=notice.message,
        time=status.history[-1].time,
        details=details,
    )
    for receiver in receivers:
        if receiver.wants(notice.event):
            notifier.send(receiver, notification)


def health(
    notifier: Notifier, namespace: str, name: str, spec: ModelRolloutSpec, shared: list[Receiver]
) -> tuple[ReceiverStatus, ...]:
    """The rollout's own receivers in full; the operator's only while failing, so their
    deliveries for other rollouts do not rewrite every rollout's status."""
    own = [_status(notifier.health(n)) for n in own_receivers(namespace, name, spec)]
    failing = [_status(h) for h in (notifier.health(r.name) for r in shared) if _failing(h)]
    return (*own, *(_without_counts(s) for s in failing))


def own_receivers(namespace: str, name: str, spec: ModelRolloutSpec) -> list[str]:
    return [_own(namespace, name, r.name) for r in spec.notifications]


def _failing(health: ReceiverHealth) -> bool:
    if health.last_error_time is None:
        return False
    return health.last_success is None or health.last_error_time > health.last_success


def _status(health: ReceiverHealth) -> ReceiverStatus:
    return ReceiverStatus(
        receiver=health.receiver,
        delivered=health.delivered,
        failed=health.failed,
        last_error=health.last_error,
        last_success=health.last_success.replace(microsecond=0) if health.last_success else None,
    )


def _without_counts(status: ReceiverStatus) -> ReceiverStatus:
    return status.model_copy(update={"delivered": 0, "failed": 0, "last_success": None})
