"""The loop one daemon runs per rollout: a pass, then sleep until it is due, the
spec or the action annotation changes, or kopf stops the daemon."""

from __future__ import annotations

import asyncio

import kopf

from modelrollout import telemetry
from modelrollout.controller.adapters import Adapters
from modelrollout.controller.reconcile import ClaimsIndex, Logger, reconcile, release

ERROR_BACKOFF_SECONDS = 5.0


def wake_event(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Event:
    """The event that wakes one rollout's daemon early: its spec or action changed, or
    someone else wrote a routing object it drives."""
    wakes: dict[tuple[str, str], asyncio.Event] = memo.wakes  # shared: see configure
    return wakes.setdefault((namespace, name), asyncio.Event())


def forget_wake(memo: kopf.Memo, namespace: str, name: str) -> None:
    memo.wakes.pop((namespace, name), None)


async def drive(
    adapters: Adapters,
    body: kopf.Body,
    claims: ClaimsIndex,
    wake: asyncio.Event,
    stopped: kopf.DaemonStopped,
    logger: Logger,
) -> bool:
    """Drive a rollout until kopf stops the daemon; True when it was deleted (the
    traffic has then been given back)."""
    loop = asyncio.get_running_loop()
    due: float | None = None
    while not stopped:
        if due is not None and not wake.is_set():  # woken early: nothing was late
            telemetry.TICK_LAG.observe(max(0.0, loop.time() - due))
        wake.clear()
        try:
            with telemetry.timed(telemetry.RECONCILE):
                delay = await reconcile(adapters, body, claims, logger)
        except Exception:
            telemetry.RECONCILE_ERRORS.inc()
            logger.exception("reconcile failed; retrying in %.0fs", ERROR_BACKOFF_SECONDS)
            delay = ERROR_BACKOFF_SECONDS
        due = loop.time() + delay
        await _sleep(stopped, wake, delay)
    # after the last pass, so no write of this daemon can follow the release
    reason = stopped.reason or kopf.DaemonStoppingReason(0)
    deleted = kopf.DaemonStoppingReason.RESOURCE_DELETED in reason
    if deleted:
        await release(adapters, body, logger)
    if kopf.DaemonStoppingReason.OPERATOR_PAUSING in reason:
        telemetry.forget_states()  # a peer of higher priority took over
    return deleted


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, delay: float) -> None:
    waiters = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
