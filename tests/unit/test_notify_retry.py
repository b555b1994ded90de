"""What an attempt's answer means, the backoff, and the sanitized error line."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
import requests
from urllib3.exceptions import ProtocolError

from modelrollout.egress import AddressNotAllowed, AddressPolicy
from modelrollout.notify import DeliveryPolicy, Notification, Notifier, Receiver, ReceiverHealth
from modelrollout.notify.delivery import (
    judge_error,
    judge_status,
    parse_retry_after,
    redact,
)
from modelrollout.telemetry import REGISTRY

POLICY = DeliveryPolicy(timeout=2.5, backoff=1.0, backoff_cap=8.0, retry_after_cap=20.0)
URL = "http://user:pa55word@hooks.example.svc/services/T0/B0/t0ken?key=qu3ry"


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(code: int) -> None:
    outcome = judge_status(code, None, POLICY)
    assert outcome.delivered
    assert not outcome.retry


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_5xx_429_and_408_are_retried(code: int) -> None:
    outcome = judge_status(code, None, POLICY)
    assert (outcome.delivered, outcome.retry, outcome.error) == (False, True, f"HTTP {code}")


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_is_not_retried(code: int) -> None:
    outcome = judge_status(code, "5", POLICY)
    assert (outcome.delivered, outcome.retry, outcome.error) == (False, False, f"HTTP {code}")


def test_a_redirect_is_not_followed_nor_retried() -> None:
    outcome = judge_status(302, None, POLICY)
    assert (outcome.retry, outcome.error) == (False, "HTTP 302: redirects are not followed")


def test_retry_after_is_followed_up_to_its_cap() -> None:
    assert judge_status(429, "7", POLICY).retry_after == 7.0
    assert judge_status(503, "3600", POLICY).retry_after == 20.0
    assert judge_status(503, "soon", POLICY).retry_after is None


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("", now) is None
    assert parse_retry_after("-1", now) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        waits = [POLICY.backoff_delay(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered, not one fixed value


def test_timeouts_and_connection_errors_are_retried() -> None:
    timeout = judge_error(requests.ReadTimeout("read timed out"), URL, POLICY)
    assert (timeout.retry, timeout.error) == (True, "timed out after 2.5s")
    refused = requests.ConnectionError(ProtocolError("aborted", ConnectionRefusedError(111, "no")))
    outcome = judge_error(refused, URL, POLICY)
    assert outcome.retry
    assert outcome.error == "ConnectionRefusedError: [Errno 111] no"


def test_a_disallowed_address_is_not_retried() -> None:
    denied = AddressNotAllowed("which the operator's allowed addresses (*.svc) do not include")
    wrapped = requests.ConnectionError(ProtocolError("Connection aborted.", denied))
    outcome = judge_error(wrapped, URL, POLICY)
    assert not outcome.retry
    assert outcome.error == (
        "address not allowed: which the operator's allowed addresses (*.svc) do not include"
    )


def test_an_unexpected_error_is_not_retried() -> None:
    outcome = judge_error(requests.exceptions.InvalidHeader("bad header"), URL, POLICY)
    assert not outcome.retry
    assert outcome.error == "InvalidHeader: bad header"


def test_the_error_line_never_repeats_the_url_path_query_or_password() -> None:
    said = (
        f"HTTPConnectionPool(host='hooks.example.svc', port=80): Max retries exceeded with url: "
        f"/services/T0/B0/t0ken?key=qu3ry (Caused by <urllib3.connection.HTTPConnection "
        f"object at 0x7f3a2b1c>: {URL}\nsecond line"
    )
    line = redact(said, URL)
    for secret in ("t0ken", "qu3ry", "pa55word", "0x7f3a2b1c", "\n"):
        assert secret not in line
    assert "<url>" in line


def test_send_never_raises_and_counts_what_it_could_not_queue() -> None:
    notifier = Notifier(AddressPolicy.parse("127.0.0.0/8"))
    receiver = Receiver("unit-outside-loop", "webhook", "http://127.0.0.1:9/x")
    n = Notification("u/1", "Started", "ml", "r", 1, 4, 1, "Progressing", "", "", datetime.now(UTC))
    notifier.send(receiver, n)  # no running event loop here
    assert notifier.health(receiver).dropped == 1
    notifier.send(receiver, None)  # type: ignore[arg-type]  # a caller's bug, logged
    asyncio.run(notifier.close(deadline=0))


def test_a_full_queue_counts_what_it_drops() -> None:
    """Sends in one go queue before the worker first runs (which ones go: see the
    integration test with a real receiver)."""
    notifier = Notifier(AddressPolicy.parse("10.255.255.0/24"), DeliveryPolicy(queue_limit=3))
    receiver = Receiver("unit-full-queue", "webhook", "http://127.0.0.1:9/x")

    async def scenario() -> None:
        for i in range(1, 7):
            notifier.send(receiver, _notification(i))
        health = notifier.health(receiver)
        assert (health.queued, health.dropped) == (3, 3)
        await notifier.close(deadline=30)

    asyncio.run(scenario())
    health = notifier.health(receiver)
    # 127.0.0.1 is outside this allowlist: each remaining one fails at once, unsent.
    assert (health.failed, health.dropped, health.delivered, health.queued) == (3, 3, 0, 0)
    assert health.last_error is not None
    assert health.last_error.startswith("address not allowed")


def test_forget_drops_a_receivers_health_and_series_once_it_has_sent_its_queue() -> None:
    notifier = Notifier(AddressPolicy.parse("10.255.255.0/24"))
    receiver = Receiver("unit-forget", "webhook", "http://127.0.0.1:9/x")
    labels = {"receiver": receiver.name, "result": "failed"}
    queue = {"receiver": receiver.name}

    async def scenario() -> None:
        notifier.send(receiver, _notification(1))
        assert REGISTRY.get_sample_value("modelrollout_notifications_total", labels) == 0
        assert REGISTRY.get_sample_value("modelrollout_notification_queue_length", queue) == 1
        notifier.forget(receiver)  # one still queued: kept until it is sent
        assert notifier.receivers() == [receiver.name]
        while notifier.receivers():
            await asyncio.sleep(0.01)
        await notifier.close(deadline=0)

    assert REGISTRY.get_sample_value("modelrollout_notifications_total", labels) is None
    asyncio.run(scenario())
    assert notifier.health(receiver) == ReceiverHealth(receiver.name)
    assert REGISTRY.get_sample_value("modelrollout_notifications_total", labels) is None
    assert REGISTRY.get_sample_value("modelrollout_notification_queue_length", queue) is None


def _notification(i: int) -> Notification:
    return Notification(
        f"u/{i}", "Started", "ml", "r", 1, 4, 1, "Progressing", "", "", datetime.now(UTC)
    )


def test_settled_waits_for_the_named_receivers_queues_and_no_others() -> None:
    """Refused addresses fail at once, so the queue empties without a network."""
    notifier = Notifier(AddressPolicy.parse("10.255.255.0/24"))
    mine = Receiver("unit-settled-mine", "webhook", "http://127.0.0.1:9/x")

    async def scenario() -> tuple[bool, bool, int, bool]:
        nothing_sent = await notifier.settled([mine.name, "unknown"], timeout=0)
        for i in range(1, 4):
            notifier.send(mine, _notification(i))
        queued = notifier.health(mine).queued
        done = await notifier.settled([mine.name], timeout=30)
        await notifier.close(deadline=0)
        return nothing_sent, done, queued, notifier.health(mine).queued == 0

    nothing_sent, done, queued, empty = asyncio.run(scenario())
    assert (nothing_sent, done, queued, empty) == (True, True, 3, True)
    assert notifier.health(mine).failed == 3
