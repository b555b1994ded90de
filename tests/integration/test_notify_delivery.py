"""Notifications to real receiver processes on loopback (tests/testbed/receiver.py).

No control plane: the sender is exercised on its own, with the real HTTP stack and
the operator's allowlist session. Waits poll the receivers' records and the
notifier's health with generous deadlines; no assertion is about elapsed time.
Backoff is checked on the waits the notifier computed (recorded by its `sleep`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client import generate_latest

from modelrollout.egress import AddressPolicy
from modelrollout.notify import (
    EVENTS,
    DeliveryPolicy,
    Notification,
    Notifier,
    Receiver,
    ReceiverHealth,
    promote_command,
)
from modelrollout.notify.formats import summary
from modelrollout.telemetry import REGISTRY
from testbed import procs
from testbed.receiver import FAILURE_BODY

from .conftest import SECRET_PATH, Listener

LOOPBACK = AddressPolicy.parse("127.0.0.0/8")
FAST = DeliveryPolicy(attempts=5, timeout=5.0, backoff=0.05, backoff_cap=1.0)


class RecordedWaits:
    """The notifier's `sleep`: really waits, and keeps every wait it was asked for."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        await asyncio.sleep(seconds)


def name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:6]}"


def transitions(count: int, uid: str = "0d5e-uid") -> Iterator[Notification]:
    """`count` transitions of one rollout, cycling through every event."""
    for i in range(1, count + 1):
        event = EVENTS[(i - 1) % len(EVENTS)]
        details = {}
        if event == "AwaitingApproval":
            details = {"command": promote_command("ml", "ranker")}
        if event == "RolledBack":
            details = {"metric": "error-rate", "value": "0.08", "bound": "max 0.05"}
        yield Notification(
            id=f"{uid}/{i}",
            event=event,
            namespace="ml",
            name="ranker",
            stage=i,
            stage_count=count,
            weight=min(100, i * 5),
            phase="Progressing",
            reason=event,
            message=f"transition {i}",
            time=datetime.now(UTC),
            details=details,
        )


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def send_all(
    notifier: Notifier,
    target: Receiver,
    sent: Iterable[Notification],
    done: Callable[[ReceiverHealth], bool],
    what: str,
) -> None:
    """Send each of `sent` to `target` in one go, wait until `done` holds of the
    target's health, then close the notifier."""

    async def scenario() -> None:
        for notification in sent:
            notifier.send(target, notification)
        await until(lambda: done(notifier.health(target)), what)
        await notifier.close(deadline=10)

    asyncio.run(scenario())


def sample(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def test_twenty_notifications_arrive_once_each_in_order_in_every_format(
    receiver: Callable[..., Listener],
) -> None:
    listeners = {kind: receiver() for kind in ("webhook", "slack", "cloudevents")}
    targets = {
        kind: Receiver(name(kind), kind, listener.url)  # type: ignore[arg-type]
        for kind, listener in listeners.items()
    }
    sent = list(transitions(20))
    notifier = Notifier(LOOPBACK, FAST)

    async def scenario() -> None:
        for notification in sent:
            for target in targets.values():
                notifier.send(target, notification)
        await until(
            lambda: all(notifier.health(t).delivered == 20 for t in targets.values()),
            "20 deliveries to each receiver",
        )
        await notifier.close(deadline=10)

    asyncio.run(scenario())
    ids = [n.id for n in sent]
    assert listeners["webhook"].answered() == [(i, 200) for i in ids]
    assert listeners["cloudevents"].answered() == [(i, 200) for i in ids]
    assert listeners["slack"].answered() == [(summary(n), 200) for n in sent]

    webhook = listeners["webhook"].requests()[0]
    assert webhook["method"] == "POST"
    assert webhook["path"] == SECRET_PATH
    assert webhook["headers"]["Content-Type"] == "application/json"
    assert webhook["headers"]["User-Agent"].startswith("modelrollout-operator/")
    event = json.loads(listeners["cloudevents"].requests()[0]["body"])
    assert listeners["cloudevents"].requests()[0]["headers"]["Content-Type"] == (
        "application/cloudevents+json; charset=utf-8"
    )
    assert (event["specversion"], event["type"]) == (
        "1.0",
        "io.mlops.rollouts.modelrollout.started",
    )
    assert event["source"] == "/apis/rollouts.mlops.io/v1alpha1/namespaces/ml/modelrollouts/ranker"

    exposition = generate_latest(REGISTRY).decode()
    for target in targets.values():
        health = notifier.health(target)
        assert (health.delivered, health.failed, health.dropped, health.queued) == (20, 0, 0, 0)
        assert health.last_error is None
        assert health.last_success is not None
        labels = {"receiver": target.name}
        assert sample("modelrollout_notifications_total", **labels, result="delivered") == 20
        assert sample("modelrollout_notifications_total", **labels, result="failed") == 0
        assert sample("modelrollout_notifications_total", **labels, result="dropped") == 0
        assert sample("modelrollout_notification_queue_length", **labels) == 0
        line = f'modelrollout_notifications_total{{receiver="{target.name}",result="delivered"}}'
        assert f"{line} 20.0" in exposition
        assert f'modelrollout_notification_queue_length{{receiver="{target.name}"}}' in exposition


def test_a_receiver_failing_the_first_three_with_503_gets_everything_once_in_order(
    receiver: Callable[..., Listener],
) -> None:
    listener = receiver("--fail-first", "3", "--status", "503")
    target = Receiver(name("flaky"), "webhook", listener.url)
    sent = list(transitions(20))
    waits = RecordedWaits()
    notifier = Notifier(LOOPBACK, FAST, sleep=waits)

    send_all(notifier, target, sent, lambda h: h.delivered == 20, "20 deliveries")
    first = sent[0].id
    assert listener.answered() == [(first, 503)] * 3 + [(n.id, 200) for n in sent]
    # Three retries of the first, each wait drawn from a doubling range.
    assert len(waits.seconds) == 3
    for retry, wait in enumerate(waits.seconds, start=1):
        ceiling = FAST.backoff * 2 ** (retry - 1)
        assert ceiling / 2 <= wait <= ceiling
    health = notifier.health(target)
    assert (health.delivered, health.failed, health.dropped) == (20, 0, 0)


def test_retry_after_is_respected(receiver: Callable[..., Listener]) -> None:
    listener = receiver("--fail-first", "1", "--status", "429", "--retry-after", "1")
    target = Receiver(name("limited"), "cloudevents", listener.url)
    waits = RecordedWaits()
    notifier = Notifier(LOOPBACK, FAST, sleep=waits)

    send_all(notifier, target, transitions(1), lambda h: h.delivered == 1, "the delivery")
    assert [status for _, status in listener.answered()] == [429, 200]
    assert waits.seconds == [1.0]  # the receiver's Retry-After, above the 0.05s backoff


def test_a_full_queue_drops_the_oldest(receiver: Callable[..., Listener]) -> None:
    listener = receiver()
    target = Receiver(name("crowded"), "webhook", listener.url)
    notifier = Notifier(LOOPBACK, DeliveryPolicy(queue_limit=3))
    sent = list(transitions(6))

    # in one go: all queue before the worker first runs
    send_all(notifier, target, sent, lambda h: h.delivered == 3, "3 deliveries")
    assert listener.answered() == [(n.id, 200) for n in sent[3:]]
    health = notifier.health(target)
    assert (health.delivered, health.dropped) == (3, 3)
    assert sample("modelrollout_notifications_total", receiver=target.name, result="dropped") == 3


def test_a_dead_receiver_is_retried_with_backoff_then_counted_failed() -> None:
    port = procs.free_port()  # nothing listens there
    target = Receiver(name("dead"), "slack", f"http://127.0.0.1:{port}{SECRET_PATH}")
    policy = DeliveryPolicy(attempts=4, timeout=5.0, backoff=0.05, backoff_cap=0.15)
    waits = RecordedWaits()
    notifier = Notifier(LOOPBACK, policy, sleep=waits)

    send_all(notifier, target, transitions(3), lambda h: h.failed == 3, "3 failures")
    # Per notification: 4 attempts, so 3 waits, doubling up to the cap.
    assert len(waits.seconds) == 9
    for i, wait in enumerate(waits.seconds):
        ceiling = min(0.15, 0.05 * 2 ** (i % 3))
        assert ceiling / 2 <= wait <= ceiling
    health = notifier.health(target)
    assert (health.delivered, health.failed, health.dropped, health.queued) == (0, 3, 0, 0)
    assert (
        health.last_error == "ConnectionRefusedError: [Errno 111] Connection refused (4 attempts)"
    )
    assert health.last_error_time is not None
    assert health.last_success is None
    labels = {"receiver": target.name}
    assert sample("modelrollout_notifications_total", **labels, result="failed") == 3
    assert sample("modelrollout_notifications_total", **labels, result="delivered") == 0


def test_a_hanging_receiver_times_out_as_failed_without_blocking_send_or_stalling_another(
    receiver: Callable[..., Listener],
) -> None:
    hanging = receiver("--delay", "120")
    healthy = receiver()
    stuck = Receiver(name("hanging"), "webhook", hanging.url)
    other = Receiver(name("healthy"), "webhook", healthy.url)
    policy = DeliveryPolicy(attempts=1, timeout=5.0)
    notifier = Notifier(LOOPBACK, policy)
    first, second, *more = transitions(12)

    async def scenario() -> None:
        notifier.send(stuck, first)
        await until(lambda: len(hanging.requests()) == 1, "the hanging receiver to get one")
        # The worker is now inside a request the receiver will not answer for 120s.
        notifier.send(stuck, second)
        held = notifier.health(stuck)
        assert (held.queued, held.delivered, held.failed) == (1, 0, 0)  # send came back
        for notification in more:
            notifier.send(other, notification)
        await until(lambda: notifier.health(other).delivered == 10, "the healthy receiver")
        # Everything reached the healthy receiver while the hanging one still held
        # its first request: it did not wait behind it.
        assert notifier.health(stuck).failed == 0
        assert len(hanging.requests()) == 1
        await until(lambda: notifier.health(stuck).failed == 2, "both to time out")
        await notifier.close(deadline=10)

    asyncio.run(scenario())
    assert hanging.answered() == [(first.id, 200), (second.id, 200)]  # arrived, in order
    assert healthy.answered() == [(n.id, 200) for n in more]
    health = notifier.health(stuck)
    assert (health.delivered, health.failed, health.dropped) == (0, 2, 0)
    assert health.last_error == "timed out after 5s (1 attempt)"


def test_a_disallowed_receiver_is_never_connected_to(receiver: Callable[..., Listener]) -> None:
    listener = receiver()
    port = listener.url.split(":")[2].split("/")[0]
    by_address = Receiver(name("denied-ip"), "webhook", listener.url)
    by_name = Receiver(name("denied-name"), "cloudevents", f"http://localhost:{port}/x")
    waits = RecordedWaits()
    notifier = Notifier(AddressPolicy.parse("*.svc,10.0.0.0/8"), FAST, sleep=waits)

    async def scenario() -> None:
        for notification in transitions(2):
            notifier.send(by_address, notification)
            notifier.send(by_name, notification)
        await until(
            lambda: notifier.health(by_address).failed == notifier.health(by_name).failed == 2,
            "the refusals",
        )
        await notifier.close(deadline=10)

    asyncio.run(scenario())
    assert listener.entries() == []  # no request, and not even a connection
    assert waits.seconds == []  # a refused address is not retried
    for target in (by_address, by_name):
        error = notifier.health(target).last_error
        assert error is not None
        assert error.startswith("address not allowed: ")
        assert error.endswith("(*.svc,10.0.0.0/8) do not include (1 attempt)")
        assert "s3cret" not in error

    # The same receiver, allowed: it records the connection and the request.
    allowed = Notifier(LOOPBACK, FAST)

    send_all(
        allowed, by_address, transitions(1), lambda h: h.delivered == 1, "the allowed delivery"
    )
    assert [e["kind"] for e in listener.entries()] == ["connection", "request"]


def test_other_4xx_is_failed_at_once_without_the_response_body(
    receiver: Callable[..., Listener],
) -> None:
    listener = receiver("--status", "400")
    target = Receiver(name("refusing"), "slack", listener.url)
    waits = RecordedWaits()
    notifier = Notifier(LOOPBACK, FAST, sleep=waits)

    send_all(notifier, target, transitions(3), lambda h: h.failed == 3, "3 failures")
    assert len(listener.requests()) == 3  # once each
    assert waits.seconds == []
    error = notifier.health(target).last_error
    assert error == "HTTP 400 (1 attempt)"
    assert FAILURE_BODY.decode() not in error


def test_a_receiver_gets_only_the_events_it_asked_for(receiver: Callable[..., Listener]) -> None:
    listener = receiver()
    wanted = frozenset({"AwaitingApproval", "RolledBack"})
    target = Receiver(name("filtered"), "webhook", listener.url, events=wanted)
    sent = list(transitions(7))  # one of each event
    notifier = Notifier(LOOPBACK, FAST)

    send_all(notifier, target, sent, lambda h: h.delivered == 2, "2 deliveries")
    bodies = [json.loads(r["body"]) for r in listener.requests()]
    assert [b["event"] for b in bodies] == ["AwaitingApproval", "RolledBack"]
    assert bodies[0]["details"] == {"command": "kubectl modelrollout promote ranker -n ml"}
    assert bodies[1]["details"] == {"metric": "error-rate", "value": "0.08", "bound": "max 0.05"}


def test_close_drains_then_counts_what_is_left_as_dropped(
    receiver: Callable[..., Listener],
) -> None:
    healthy, hanging = receiver(), receiver("--delay", "120")
    drained = Receiver(name("drained"), "webhook", healthy.url)
    stuck = Receiver(name("stuck"), "webhook", hanging.url)
    notifier = Notifier(LOOPBACK, DeliveryPolicy(timeout=60.0))
    sent = list(transitions(5))

    async def scenario() -> None:
        for notification in sent:
            notifier.send(drained, notification)
            notifier.send(stuck, notification)
        await until(lambda: len(hanging.requests()) == 1, "the hanging receiver to get one")
        await until(lambda: notifier.health(drained).delivered == 5, "the healthy receiver")
        await notifier.close(deadline=0.5)
        notifier.send(drained, sent[0])  # after close: counted, not queued

    asyncio.run(scenario())
    assert healthy.answered() == [(n.id, 200) for n in sent]
    assert notifier.health(drained).dropped == 1
    lost = notifier.health(stuck)
    assert (lost.delivered, lost.failed, lost.dropped, lost.queued) == (0, 0, 5, 0)
    labels = {"receiver": stuck.name}
    assert sample("modelrollout_notifications_total", **labels, result="dropped") == 5
    assert sample("modelrollout_notification_queue_length", **labels) == 0
