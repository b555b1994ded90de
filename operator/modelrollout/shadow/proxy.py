"""The request path: every request goes to the stable, whose answer the client gets.

The stable's status, headers and body are streamed back unchanged (bodies pass
through still encoded); the only changes are those any HTTP proxy makes: hop-by-hop
headers are dropped and X-Forwarded-* added. Nothing waits for the candidate: a copy
starts only once the client has its whole answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from modelrollout.shadow.metrics import ShadowMetrics
from modelrollout.shadow.settings import Settings
from modelrollout.shadow.shadowing import Shadower, StableAnswer, upstream_url

log = logging.getLogger("modelrollout.shadow")

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# aiohttp's client adds these when a request lacks them; a proxy must not.
NO_DEFAULT_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def end_to_end(headers: CIMultiDictProxy[str], drop: tuple[str, ...] = ()) -> CIMultiDict[str]:
    """The headers without hop-by-hop ones (also those the Connection header names)."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    skip = HOP_BY_HOP | named | {name.lower() for name in drop}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in skip)


def request_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    # Host is the upstream's (the client named the comparator); aiohttp answered
    # `Expect: 100-continue` itself already.
    headers = end_to_end(request.headers, drop=("Host", "Expect"))
    if request.remote:
        prior = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
    headers.setdefault("X-Forwarded-Host", request.host)
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    return headers


async def read_head(request: web.BaseRequest, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the body, and whether more follows (then it is not copied)."""
    if not request.body_exists:
        return b"", False
    if request.content_length is not None and request.content_length > limit:
        return b"", True
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(parts), False
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), True


async def _rest(head: bytes, request: web.BaseRequest) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in request.content.iter_any():
        yield chunk


class Proxy:
    def __init__(
        self,
        settings: Settings,
        metrics: ShadowMetrics,
        shadower: Shadower,
        session: aiohttp.ClientSession,
    ) -> None:
        self.settings, self.metrics, self.shadower, self.session = (
            settings,
            metrics,
            shadower,
            session,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.metrics.requests.inc()
        head, more = await read_head(request, self.settings.max_body)
        headers = request_headers(request)
        copied = self.shadower.sampled()
        if copied and more:
            self.metrics.dropped["body_too_large"].inc()
            copied = False
        response, stable = await self._forward(request, headers, head, more, keep=copied)
        if copied:  # only now: the copy's work never competes with the client's answer
            self.shadower.start(request.method, request.raw_path, headers, head, stable)
        return response

    async def _forward(
        self,
        request: web.Request,
        headers: CIMultiDict[str],
        head: bytes,
        more: bool,
        keep: bool,
    ) -> tuple[web.StreamResponse, StableAnswer | str]:
        """The stable's answer, streamed to the client; and, when `keep`, what the
        comparison needs of it (or the uncompared reason when there is none)."""
        data: bytes | AsyncIterator[bytes] | None
        if more:  # streamed on; its Content-Length, if any, stays and frames it
            data = _rest(head, request)
        elif request.body_exists:
            data = head
            headers.popall("Content-Length", None)  # aiohttp sets it from the bytes
        else:
            data = None
        url = upstream_url(self.settings.stable, request.raw_path)
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            )
        except TimeoutError:
            message = f"the stable model did not answer in {self.settings.stable_timeout:g}s"
            return _error(504, message), "stable_error"
        except (aiohttp.ClientError, OSError) as error:
            log.warning("stable model unreachable: %s %s: %r", request.method, url, error)
            message = f"the stable model is unreachable: {type(error).__name__}"
            return _error(502, message), "stable_error"
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=end_to_end(upstream.headers),
            )
            kept: list[bytes] = []
            size = 0
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    if keep:
                        size += len(chunk)
                        if size <= self.settings.max_body:
                            kept.append(chunk)
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # the client left mid-answer: nothing to compare
                log.debug("client gone: %s %s", request.method, request.raw_path)
                return response, "stable_error"
        body = b"".join(kept) if size <= self.settings.max_body else None
        encoding = upstream.headers.get("Content-Encoding", "").strip().lower()
        return response, StableAnswer(upstream.status, body, encoding)


def _error(status: int, message: str) -> web.Response:
    """The comparator's own answer when the stable gave none."""
    return web.json_response({"error": f"modelrollout-shadow: {message}"}, status=status)
