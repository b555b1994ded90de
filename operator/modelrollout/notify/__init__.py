"""Notifications of rollout transitions to webhooks, Slack and CloudEvents receivers.

    notifier = Notifier(AddressPolicy.from_environment())
    notifier.send(Receiver("ops", "slack", url), Notification(...))  # returns at once
    notifier.health("ops")  # delivered, failed, dropped, last error and success
    await notifier.close(deadline=10)

See docs/notifications.md for the formats and the delivery guarantees.
"""

from modelrollout.notify.delivery import DeliveryPolicy
from modelrollout.notify.model import (
    EVENTS,
    RECEIVER_TYPES,
    Event,
    Notification,
    Receiver,
    ReceiverType,
    promote_command,
)
from modelrollout.notify.notifier import Notifier, ReceiverHealth

__all__ = [
    "EVENTS",
    "RECEIVER_TYPES",
    "DeliveryPolicy",
    "Event",
    "Notification",
    "Notifier",
    "Receiver",
    "ReceiverHealth",
    "ReceiverType",
    "promote_command",
]
