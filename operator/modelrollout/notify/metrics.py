"""The notifier's series in the operator's registry (defined in telemetry.py)."""

from __future__ import annotations

from typing import Literal

from modelrollout.telemetry import NOTIFICATION_QUEUE, NOTIFICATIONS

Result = Literal["delivered", "failed", "dropped"]
RESULTS: tuple[Result, ...] = ("delivered", "failed", "dropped")


def start(receiver: str) -> None:
    """Every result at 0 from the first send, so a rate() sees the first failure."""
    for result in RESULTS:
        NOTIFICATIONS.labels(receiver, result)
    NOTIFICATION_QUEUE.labels(receiver).set(0)


def counted(receiver: str, result: Result, count: int = 1) -> None:
    NOTIFICATIONS.labels(receiver, result).inc(count)


def queued(receiver: str, length: int) -> None:
    NOTIFICATION_QUEUE.labels(receiver).set(length)


def forget(receiver: str) -> None:
    for result in RESULTS:
        if (receiver, result) in NOTIFICATIONS._metrics:  # children by label values
            NOTIFICATIONS.remove(receiver, result)
    if (receiver,) in NOTIFICATION_QUEUE._metrics:
        NOTIFICATION_QUEUE.remove(receiver)
