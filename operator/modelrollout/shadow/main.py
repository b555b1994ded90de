"""`modelrollout-shadow`: the comparator's process, its two listeners and its shutdown.

SIGTERM or SIGINT: stop accepting, let requests under way finish (a few seconds at
most), cancel the copies still waiting for the candidate, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest

from modelrollout.shadow.follow import NoCredentials, RolloutFollower, api_client
from modelrollout.shadow.metrics import ShadowMetrics
from modelrollout.shadow.proxy import NO_DEFAULT_HEADERS, Proxy
from modelrollout.shadow.settings import Settings, parse_settings
from modelrollout.shadow.shadowing import Shadower

log = logging.getLogger("modelrollout.shadow")
SHUTDOWN_GRACE_SECONDS = 10.0


def metrics_app(metrics: ShadowMetrics) -> web.Application:
    async def page(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", page)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(settings: Settings, api: object | None) -> None:
    metrics = ShadowMetrics(settings.rollout)
    # The stable's pool has no limit (one would queue clients); bodies pass still encoded.
    stable = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=NO_DEFAULT_HEADERS,
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.stable_timeout,
            sock_read=settings.stable_timeout,
        ),
    )
    candidate = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.max_in_flight),
        skip_auto_headers=NO_DEFAULT_HEADERS,
        timeout=aiohttp.ClientTimeout(total=settings.candidate_timeout),
    )
    shadower = Shadower(settings, metrics, candidate)
    proxy = Proxy(settings, metrics, shadower, stable)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", proxy.handle)
    runners = [
        web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS),
        web.AppRunner(metrics_app(metrics), access_log=None),
    ]
    follower = None
    try:
        for runner, where in zip(runners, (settings.listen, settings.metrics_listen), strict=True):
            await runner.setup()
            await web.TCPSite(runner, where.host, where.port).start()
        if api is not None:
            follower = asyncio.create_task(RolloutFollower(settings, metrics, shadower, api).run())
        log.info(
            "listening on %s for %s; copying %g of requests to %s%s; metrics on %s",
            settings.listen,
            settings.stable,
            settings.share,
            settings.candidate,
            f" while {settings.namespace}/{settings.rollout} mirrors" if api else "",
            settings.metrics_listen,
        )
        await _stopped()
        log.info("stopping")
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await runners[0].cleanup()  # requests under way finish first
        await shadower.close()
        await stable.close()
        await candidate.close()
        await runners[1].cleanup()


async def _stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s modelrollout-shadow: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    api = None
    if settings.follow_rollout:
        try:
            api = api_client()
        except NoCredentials as error:
            log.error("%s", error)
            sys.exit(2)
    try:
        asyncio.run(serve(settings, api))
    except OSError as error:  # e.g. the port is taken
        log.error("cannot start: %s", error)
        sys.exit(1)
