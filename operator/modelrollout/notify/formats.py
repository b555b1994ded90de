"""The three wire formats, as pure functions of a Notification.

- generic webhook: the Notification as JSON (`payload`), documented field by field
  in docs/notifications.md;
- Slack-compatible incoming webhook: `{"text", "blocks"}` with one readable line;
- CloudEvents 1.0, HTTP structured content mode: the JSON event format with
  `payload` as `data`.

Free text is clipped so a body stays far below the 64 KiB that CloudEvents
intermediaries must forward.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelrollout.notify.model import Notification

JSON = "application/json"
CLOUDEVENTS_JSON = "application/cloudevents+json; charset=utf-8"
CLOUDEVENTS_TYPE_PREFIX = "io.mlops.rollouts.modelrollout."
MESSAGE_CHARS = 2000
DETAIL_CHARS = 500
SLACK_TEXT_CHARS = 3000  # the most a section block takes


@dataclass(frozen=True)
class Body:
    content_type: str
    data: bytes


def render(receiver_type: str, notification: Notification) -> Body:
    """The request body for a receiver of `receiver_type`."""
    if receiver_type == "slack":
        return Body(JSON, _dump(slack_payload(notification)))
    if receiver_type == "cloudevents":
        return Body(CLOUDEVENTS_JSON, _dump(cloudevent(notification)))
    if receiver_type == "webhook":
        return Body(JSON, _dump(payload(notification)))
    raise ValueError(f"unknown receiver type {receiver_type!r}")


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: two transitions in one second keep their order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(n: Notification) -> dict[str, Any]:
    """The generic webhook body, and the `data` of a CloudEvent."""
    return {
        "id": n.id,
        "event": n.event,
        "namespace": n.namespace,
        "name": n.name,
        "stage": n.stage,
        "stageCount": n.stage_count,
        "weight": n.weight,
        "phase": n.phase,
        "reason": n.reason,
        "message": _clip(n.message, MESSAGE_CHARS),
        "time": timestamp(n.time),
        "details": {key: _clip(value, DETAIL_CHARS) for key, value in n.details.items()},
    }


def cloudevent_source(namespace: str, name: str) -> str:
    """The rollout's API path: a URI-reference naming the producer's context."""
    return f"/apis/rollouts.mlops.io/v1alpha1/namespaces/{namespace}/modelrollouts/{name}"


def cloudevent_type(event: str) -> str:
    return CLOUDEVENTS_TYPE_PREFIX + event.lower()


def cloudevent(n: Notification) -> dict[str, Any]:
    """A CloudEvent 1.0 in the JSON event format (structured content mode)."""
    return {
        "specversion": "1.0",
        "id": n.id,
        "source": cloudevent_source(n.namespace, n.name),
        "type": cloudevent_type(n.event),
        "subject": n.name,
        "time": timestamp(n.time),
        "datacontenttype": "application/json",
        "data": payload(n),
    }


def slack_payload(n: Notification) -> dict[str, Any]:
    """An incoming-webhook message: `text` is the line (and the fallback for
    clients without blocks), the blocks add a context line with where it stands."""
    line = summary(n)
    where = f"phase {n.phase} · stage {n.stage}/{n.stage_count} · weight {n.weight}%"
    return {
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(where)}]},
        ],
    }


def summary(n: Notification) -> str:
    """One readable line in Slack mrkdwn, its user text escaped."""
    line = _LINES[n.event](n, f"*{_escape(n.namespace)}/{_escape(n.name)}*")
    return _clip(line, SLACK_TEXT_CHARS)


def _started(n: Notification, who: str) -> str:
    return f"{who} started: stage {_stage(n)}, candidate at {n.weight}%"


def _advanced(n: Notification, who: str) -> str:
    return f"{who} advanced to stage {_stage(n)}: candidate at {n.weight}%"


def _awaiting(n: Notification, who: str) -> str:
    line = f"{who} is waiting for approval at stage {_stage(n)} ({n.weight}%)"
    command = n.details.get("command")
    return f"{line}. Approve with `{_escape(command)}`" if command else line


def _paused(n: Notification, who: str) -> str:
    return f"{who} paused at stage {_stage(n)} ({n.weight}%){_why(n)}"


def _rolled_back(n: Notification, who: str) -> str:
    line = f"{who} rolled back at stage {_stage(n)}"
    metric, value = n.details.get("metric"), n.details.get("value")
    if metric and value:
        bound = n.details.get("bound")
        breach = f"`{_escape(metric)}` was {_escape(value)}"
        return f"{line}: {breach}" + (f", beyond its bound {_escape(bound)}" if bound else "")
    return line + _why(n)


def _succeeded(n: Notification, who: str) -> str:
    return f"{who} succeeded: the candidate takes {n.weight}% of traffic"


def _failed(n: Notification, who: str) -> str:
    return f"{who} failed at stage {_stage(n)}{_why(n)}"


_LINES: dict[str, Callable[[Notification, str], str]] = {
    "Started": _started,
    "StageAdvanced": _advanced,
    "AwaitingApproval": _awaiting,
    "Paused": _paused,
    "RolledBack": _rolled_back,
    "Succeeded": _succeeded,
    "Failed": _failed,
}


def _stage(n: Notification) -> str:
    return f"{n.stage}/{n.stage_count}"


def _why(n: Notification) -> str:
    said = ": ".join(_escape(_clip(t, MESSAGE_CHARS)) for t in (n.reason, n.message) if t)
    return f": {said}" if said else ""


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn; everything else is shown as is."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
