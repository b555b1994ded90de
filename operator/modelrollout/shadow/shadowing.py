"""Copies of requests to the candidate, in the background, within fixed bounds.

A copy never touches the client's answer: it starts once the client has the stable's
answer, runs in its own task, and has a timeout on the candidate's whole answer.
At most `max_in_flight` copies run at once; one over that is dropped and counted,
so memory stays bounded (each copy holds at most a request and two answers of
`max_body` bytes) however fast requests come and however slow the candidate is.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from modelrollout.shadow.compare import compare, expected_values
from modelrollout.shadow.metrics import ShadowMetrics
from modelrollout.shadow.settings import Settings

log = logging.getLogger("modelrollout.shadow")
SHADOW_HEADER = "X-Modelrollout-Shadow"


@dataclass(frozen=True)
class StableAnswer:
    status: int
    body: bytes | None  # None: over max_body, not kept
    encoding: str  # the Content-Encoding, lower case; "" for none


def upstream_url(base: URL, raw_path: str) -> URL:
    """The request's path and query under a model server's URL (and its path prefix)."""
    return URL(str(base).rstrip("/") + raw_path, encoded=True)


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def decode(body: bytes, encoding: str, limit: int) -> bytes | str:
    """A stable answer without its Content-Encoding (the proxy passes bytes through
    untouched); an uncompared reason when it cannot be decoded within `limit` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return "stable_encoding"
    # wbits 47: a zlib or gzip header, detected; -15: raw deflate, which some servers send.
    for wbits in (47, -15):
        inflater = zlib.decompressobj(wbits)
        try:
            plain = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        return "stable_too_large" if len(plain) > limit else plain
    return "stable_encoding"


class Shadower:
    """Decides which requests are copied, sends the copies, and counts the verdicts."""

    def __init__(
        self,
        settings: Settings,
        metrics: ShadowMetrics,
        session: aiohttp.ClientSession,
        rng: random.Random | None = None,
    ) -> None:
        self.settings, self.metrics, self.session = settings, metrics, session
        self._rng = rng or random.Random()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Following a rollout: nothing is copied until its status says it mirrors.
        self.set_share(0.0 if settings.follow_rollout else settings.share)

    @property
    def share(self) -> float:
        return self._share

    def set_share(self, share: float) -> None:
        self._share = share
        self.metrics.share.set(share)

    def sampled(self) -> bool:
        """Whether this request is one of the share to copy."""
        return self._share > 0 and self._rng.random() < self._share

    def start(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        body: bytes,
        stable: StableAnswer | str,
    ) -> None:
        """Send a copy in the background, unless `max_in_flight` copies are under way
        (then it is dropped and counted). It is sent whatever the stable answered, so
        the candidate sees the same traffic, bad requests too; `stable` is that answer,
        or why there is none."""
        if self._in_flight >= self.settings.max_in_flight:
            self.metrics.dropped["in_flight_limit"].inc()
            return
        self._in_flight += 1
        self.metrics.in_flight.inc()
        task = asyncio.create_task(self._run(method, raw_path, headers, body, stable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the copies under way (at shutdown: their verdicts would be lost anyway)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        body: bytes,
        stable: StableAnswer | str,
    ) -> None:
        try:
            candidate = await self._ask_candidate(method, raw_path, headers, body)
            self._count(stable, candidate)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must never reach the client or stop the comparator
            log.exception("shadow comparison of %s %s failed", method, raw_path)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()

    async def _ask_candidate(
        self, method: str, raw_path: str, headers: CIMultiDict[str], body: bytes
    ) -> bytes | str:
        """The candidate's 2xx body, or why it is an error."""
        headers = CIMultiDict(headers)
        headers[SHADOW_HEADER] = "1"
        headers["Accept-Encoding"] = "identity"  # its answer is compared, never passed on
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(self.settings.candidate_timeout):
                async with self.session.request(
                    method,
                    upstream_url(self.settings.candidate, raw_path),
                    headers=headers,
                    data=body if body else None,
                    allow_redirects=False,
                ) as response:
                    answer = await read_capped(response.content.iter_any(), self.settings.max_body)
                    status = response.status
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError) as error:
            log.debug("candidate call %s %s failed: %r", method, raw_path, error)
            return "unreachable"
        self.metrics.latency.observe(loop.time() - began)
        if not 200 <= status < 300:
            return "status"
        return "too_large" if answer is None else answer

    def _count(self, stable: StableAnswer | str, candidate: bytes | str) -> None:
        if isinstance(stable, str):
            self.metrics.uncompared[stable].inc()
            return
        if not 200 <= stable.status < 300:
            self.metrics.uncompared["stable_status"].inc()
            return
        if stable.body is None:
            self.metrics.uncompared["stable_too_large"].inc()
            return
        stable_body = decode(stable.body, stable.encoding, self.settings.max_body)
        expected = (
            stable_body
            if isinstance(stable_body, str)
            else expected_values(self.settings.rules, stable_body)
        )
        if isinstance(expected, str):  # decided by the stable's answer alone
            self.metrics.uncompared[expected].inc()
            return
        if isinstance(candidate, str):
            self.metrics.candidate_errors[candidate].inc()
            self.metrics.comparisons["error"].inc()
            return
        verdict = compare(self.settings.rules, expected, candidate)
        if verdict.result == "mismatch":
            log.debug("mismatch: %s", verdict.detail)
        self.metrics.comparisons[verdict.result].inc()
