"""The sender: one ordered queue and one worker per receiver, off the decision path.

`send` only appends to a receiver's queue and returns; it never waits and never
raises, so a dead or slow receiver cannot delay a rollout. Each receiver's worker
takes its queue in order, one notification at a time, so a receiver sees the events
of a rollout in the order they happened; it exists only while there is work. The
HTTP requests run in a small thread pool of their own (requests through the
operator's allowlist session), so a hanging receiver holds one thread for at most
its timeout and other receivers go on.

A full queue drops its oldest notification: the newest say where a rollout stands
now (waiting for approval, rolled back), which is what a person needs; a stale
"stage advanced" is the cheapest loss. Every drop is counted and logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import requests

from modelrollout.egress import AddressPolicy
from modelrollout.notify import formats, metrics
from modelrollout.notify.delivery import DeliveryPolicy, Outcome, post, redact
from modelrollout.notify.model import Notification, Receiver

log = logging.getLogger("modelrollout.notify")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ReceiverHealth:
    """What this operator process has seen of one receiver since it started."""

    receiver: str
    delivered: int = 0
    failed: int = 0  # gave up after its attempts, or an error retrying cannot fix
    dropped: int = 0  # never tried to the end: a full queue, or the operator stopping
    queued: int = 0  # waiting now, the one in flight not included
    last_error: str | None = None  # one sanitized line, never a response body
    last_error_time: datetime | None = None
    last_success: datetime | None = None


@dataclass
class _Stream:
    """One receiver's queue and counts."""

    name: str
    queue: deque[tuple[Receiver, Notification]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    in_flight: Notification | None = None
    forget_when_idle: bool = False
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_error_time: datetime | None = None
    last_success: datetime | None = None


class Notifier:
    """Call `send` from the event loop's thread; `close` before the loop ends."""

    def __init__(
        self,
        addresses: AddressPolicy,
        policy: DeliveryPolicy | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.addresses = addresses
        self.policy = policy or DeliveryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(self.policy.threads, thread_name_prefix="notify")
        self._streams: dict[str, _Stream] = {}
        self._closed = False
        self._user_agent = f"modelrollout-operator/{_release()}"

    def send(self, receiver: Receiver, notification: Notification) -> None:
        """Queue `notification` for `receiver` (if it wants that event); returns at once."""
        try:
            self._send(receiver, notification)
        except Exception:  # the decision path must never see a notification problem
            what, where = getattr(notification, "id", "?"), getattr(receiver, "name", "?")
            log.exception("notification %s to %s not queued", what, where)

    def health(self, receiver: Receiver | str) -> ReceiverHealth:
        name = receiver if isinstance(receiver, str) else receiver.name
        stream = self._streams.get(name)
        if stream is None:
            return ReceiverHealth(name)
        return ReceiverHealth(
            receiver=name,
            delivered=stream.delivered,
            failed=stream.failed,
            dropped=stream.dropped,
            queued=len(stream.queue),
            last_error=stream.last_error,
            last_error_time=stream.last_error_time,
            last_success=stream.last_success,
        )

    async def settled(self, names: list[str], timeout: float) -> bool:
        """Wait up to `timeout` seconds until nothing is queued or in flight for these
        receivers; whether they all settled. Their retries count as in flight."""
        workers = [s.worker for n in names if (s := self._streams.get(n)) and s.worker is not None]
        if not workers:
            return True
        _, pending = await asyncio.wait(workers, timeout=timeout)
        return not pending

    def receivers(self) -> list[str]:
        return sorted(self._streams)

    def forget(self, receiver: Receiver | str) -> None:
        """Stop tracking a receiver (its rollout was deleted) once its queue is sent:
        its health and metric series go. A later `send` starts it afresh."""
        name = receiver if isinstance(receiver, str) else receiver.name
        stream = self._streams.get(name)
        if stream is None:
            return
        stream.forget_when_idle = True
        if stream.worker is None:
            self._remove(stream)

    async def close(self, deadline: float = 10.0) -> None:
        """Send what is queued for up to `deadline` seconds, then stop. What is
        still queued or in flight then is counted as dropped; later sends are too."""
        self._closed = True
        workers = [s.worker for s in self._streams.values() if s.worker is not None]
        if workers:
            _, pending = await asyncio.wait(workers, timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for stream in self._streams.values():
            lost = len(stream.queue) + (stream.in_flight is not None)
            if lost:
                self._drop(stream, lost, "the operator stopped before sending it")
            stream.queue.clear()
            stream.in_flight = None
            metrics.queued(stream.name, 0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals -----------------------------------------------------------------

    def _send(self, receiver: Receiver, notification: Notification) -> None:
        if not receiver.wants(notification.event):
            return
        stream = self._stream(receiver.name)
        if self._closed:
            self._drop(stream, 1, f"{notification.id} sent after the notifier closed")
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._drop(stream, 1, f"{notification.id} sent from outside the event loop")
            return
        stream.forget_when_idle = False
        if len(stream.queue) >= self.policy.queue_limit:
            _, oldest = stream.queue.popleft()
            self._drop(stream, 1, f"queue full ({self.policy.queue_limit}): {oldest.id} dropped")
        stream.queue.append((receiver, notification))
        metrics.queued(stream.name, len(stream.queue))
        if stream.worker is None:
            stream.worker = loop.create_task(self._work(stream), name=f"notify {stream.name}")

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(name)
            metrics.start(name)
        return stream

    async def _work(self, stream: _Stream) -> None:
        """Send until the queue is empty, then end: an idle receiver holds no task
        and no session (the body is never read, so connections are not reused)."""
        session = self.addresses.session()
        try:
            while stream.queue:
                receiver, notification = stream.queue.popleft()
                metrics.queued(stream.name, len(stream.queue))
                stream.in_flight = notification
                await self._deliver(stream, session, receiver, notification)
                stream.in_flight = None
        finally:
            stream.worker = None
            session.close()
        if stream.forget_when_idle:
            self._remove(stream)

    async def _deliver(
        self, stream: _Stream, session: requests.Session, receiver: Receiver, n: Notification
    ) -> None:
        try:
            body = formats.render(receiver.type, n)
        except Exception as error:  # a bug, not the receiver's fault: do not retry
            self._fail(stream, n, f"cannot render: {type(error).__name__}: {error}", 0)
            return
        loop = asyncio.get_running_loop()
        attempt = functools.partial(
            post, session, receiver.url, body, self.policy, self._user_agent
        )
        outcome = Outcome(False, False, "not attempted")
        for number in range(1, self.policy.attempts + 1):
            outcome = await loop.run_in_executor(self._pool, attempt)
            if outcome.delivered:
                stream.delivered += 1
                stream.last_success = datetime.now(UTC)
                metrics.counted(stream.name, "delivered")
                return
            if not outcome.retry or number == self.policy.attempts:
                break
            wait = self.policy.backoff_delay(number, self._rng)
            await self._sleep(max(wait, outcome.retry_after or 0.0))
        self._fail(stream, n, redact(outcome.error or "unknown", receiver.url), number)

    def _fail(self, stream: _Stream, n: Notification, error: str, attempts: int) -> None:
        tries = "" if attempts == 0 else f" ({attempts} attempt{'s' if attempts > 1 else ''})"
        stream.failed += 1
        stream.last_error = f"{error}{tries}"
        stream.last_error_time = datetime.now(UTC)
        metrics.counted(stream.name, "failed")
        log.warning("notification %s (%s) to %s failed: %s", n.id, n.event, stream.name, error)

    def _drop(self, stream: _Stream, count: int, why: str) -> None:
        stream.dropped += count
        metrics.counted(stream.name, "dropped", count)
        log.warning("%d notification(s) to %s dropped: %s", count, stream.name, why)

    def _remove(self, stream: _Stream) -> None:
        if self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
            metrics.forget(stream.name)


def _release() -> str:
    try:
        return version("modelrollout")
    except PackageNotFoundError:
        return "unknown"
