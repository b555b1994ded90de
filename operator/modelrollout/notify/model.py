"""What is sent and where: a rollout's transition as a `Notification`, and a `Receiver`.

Both are checked when made, so a bad value is refused with its field by the caller
that built it (from a spec or a Secret), never found later by a worker. A receiver's
URL usually carries a credential (a Slack webhook's path is its token), so no error
here or elsewhere in this package repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import get_args
from urllib.parse import urlsplit

from modelrollout.api.spec import NotificationEvent, ReceiverType

Event = NotificationEvent
__all__ = [
    "EVENTS",
    "RECEIVER_TYPES",
    "Event",
    "Notification",
    "Receiver",
    "ReceiverType",
    "promote_command",
]

EVENTS: tuple[str, ...] = get_args(Event)
RECEIVER_TYPES: tuple[str, ...] = get_args(ReceiverType)


@dataclass(frozen=True)
class Notification:
    """One transition of one rollout, as every receiver format renders it.

    `id` is unique and stable per transition (the same transition sent again keeps
    it), so a receiver can drop a repeat: CloudEvents consumers treat equal
    `source` + `id` as one event. `details` carries the event's own facts:
    `command` for AwaitingApproval, `metric`, `value` and `bound` for RolledBack.
    """

    id: str
    event: Event
    namespace: str
    name: str
    stage: int
    stage_count: int
    weight: int
    phase: str
    reason: str
    message: str
    time: datetime
    details: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("notification id must not be empty")
        if self.event not in EVENTS:
            raise ValueError(f"notification event {self.event!r} is not one of {EVENTS}")
        if not self.namespace or not self.name:
            raise ValueError("notification namespace and name must not be empty")
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError("notification time must be timezone-aware")
        bad = [k for k, v in self.details.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"notification details must be strings: {sorted(bad)}")
        # A read-only copy: the caller's dict may change after the send.
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))


def promote_command(namespace: str, name: str) -> str:
    """The exact command that approves a rollout waiting for approval."""
    return f"kubectl modelrollout promote {name} -n {namespace}"


@dataclass(frozen=True)
class Receiver:
    """Where notifications go. `name` identifies the receiver in metrics, health and
    status, and keys its queue: one name, one ordered stream, so names must be unique
    within the operator. `events` limits what it is sent (None: every event)."""

    name: str
    type: ReceiverType
    url: str = field(repr=False)
    events: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("receiver name must not be empty")
        if self.type not in RECEIVER_TYPES:
            raise ValueError(
                f"receiver {self.name}: type {self.type!r} is not one of {RECEIVER_TYPES}"
            )
        try:
            parts = urlsplit(self.url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises ValueError on a port out of range
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"receiver {self.name}: url must be http:// or https:// with a host")
        if self.events is not None:
            object.__setattr__(self, "events", frozenset(self.events))
            unknown = sorted(set(self.events) - set(EVENTS))
            if unknown:
                raise ValueError(f"receiver {self.name}: unknown events {unknown}")

    def wants(self, event: str) -> bool:
        return self.events is None or event in self.events
