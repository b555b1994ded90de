"""Prometheus' HTTP API (`/api/v1/query`, `/api/v1/query_range`) through `requests`,
each answer turned into a Reading the pure core understands.

Whatever a server answers is handled without trusting it: at most MAX_BODY_BYTES are
read, a body that is not the JSON Prometheus documents is a failure, and what goes
into status and Events is a short sanitized reason (the status code and Prometheus'
own `errorType`/`error`, one line), never the body. No retries and no redirects: an
unreachable Prometheus is reported at once, and the next tick is the retry.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, TypeVar

import requests

from modelrollout import telemetry
from modelrollout.core.slo import classify
from modelrollout.core.types import NoData, QueryFailed, QueryRejected, Reading, Series
from modelrollout.metrics import grouping
from modelrollout.metrics.batching import Batches
from modelrollout.ports import Shared

T = TypeVar("T")
MAX_BODY_BYTES = 8 * 1024 * 1024
REASON_CHARS = 300
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def reason(text: object) -> str:
    """One printable line of at most REASON_CHARS, for status and Events."""
    line = _UNPRINTABLE.sub(" ", str(text)).strip()
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


class _Answer(Exception):
    """A response that is not data, carried out as the Reading it amounts to."""

    def __init__(self, reading: QueryFailed | QueryRejected) -> None:
        super().__init__(reading.message)
        self.reading = reading


def _decode(response: requests.Response) -> Any:
    """`data.result` of a Prometheus response, or _Answer saying why not."""
    code = response.status_code
    raw = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
    if len(raw) > MAX_BODY_BYTES:
        raise _Answer(QueryFailed(f"HTTP {code}: response larger than {MAX_BODY_BYTES} bytes"))
    try:
        body = json.loads(raw)
    except ValueError:
        raise _Answer(QueryFailed(f"HTTP {code}: the response is not JSON")) from None
    if not isinstance(body, dict):
        raise _Answer(QueryFailed(f"HTTP {code}: the response is not a Prometheus answer"))
    if code == 200 and body.get("status") == "success":
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list | None):
            raise _Answer(QueryFailed("HTTP 200: the response has no data.result"))
        return data.get("result") or []
    said = ": ".join(str(body[k]) for k in ("errorType", "error") if body.get(k))
    message = reason(f"HTTP {code}" + (f": {said}" if said else ""))
    if code == 400:  # Prometheus refused the PromQL (bad_data): retrying cannot help
        raise _Answer(QueryRejected(reason(body.get("error") or message)))
    raise _Answer(QueryFailed(message))


class PrometheusSource:
    """One Prometheus endpoint; `session` carries its credentials and guard. With
    `shared`, a query that rollouts share is asked once for all who ask it at the
    same time (metrics/batching.py)."""

    def __init__(
        self,
        address: str,
        *,
        session: requests.Session,
        timeout_seconds: float,
        pool: Executor,
        shared: bool = True,
    ) -> None:
        self._base = address.rstrip("/")
        self._session, self._timeout, self._pool = session, timeout_seconds, pool
        self._batches = Batches(self._grouped) if shared else None

    def _get(self, path: str, params: dict[str, str], form: bool) -> Any:
        # A grouped query lists many rollouts' label values: a form keeps it out of URLs.
        with self._session.request(
            "POST" if form else "GET",
            self._base + path,
            params=None if form else params,
            data=params if form else None,
            timeout=self._timeout,
            stream=True,
            allow_redirects=False,
        ) as response:
            return _decode(response)

    async def _grouped(self, query: str) -> Any:
        return await self._ask("/api/v1/query", {"query": query}, form=True)

    async def _result(self, query: str, shared: Shared | None) -> Any:
        """The query's `data.result`, from a query shared with other rollouts when
        its template allows (metrics/grouping.py), else from its own."""
        if shared is None or self._batches is None:
            return await self._ask("/api/v1/query", {"query": query})
        found = grouping.plan(shared.text, frozenset(shared.values))
        group = tuple(shared.values[sentinel] for _, sentinel in found.labels) if found else ()
        if found is None or "" in group:  # `label=""` also matches series without it
            return await self._ask("/api/v1/query", {"query": query})
        result = await self._batches.ask(found, group)
        if result is None:  # the grouped query could not answer for it
            return await self._ask("/api/v1/query", {"query": query})
        return result

    async def _ask(self, path: str, params: dict[str, str], form: bool = False) -> Any:
        """The decoded `data.result`, or the failure as a Reading."""
        result: Any
        loop = asyncio.get_running_loop()
        call: Callable[[], Any] = functools.partial(self._get, path, params, form)
        with telemetry.timed(telemetry.QUERY):
            try:
                result = await loop.run_in_executor(self._pool, call)
            except _Answer as answer:
                result = answer.reading
            except (requests.RequestException, OSError) as error:
                result = QueryFailed(reason(f"Prometheus unreachable: {_cause(error)}"))
        if isinstance(result, QueryFailed | QueryRejected):
            kind = "rejected" if isinstance(result, QueryRejected) else "failed"
            telemetry.QUERY_ERRORS.labels(kind).inc()
        return result

    async def instant(self, query: str, shared: Shared | None = None) -> Reading:
        result = await self._result(query, shared)
        if isinstance(result, QueryFailed | QueryRejected):
            return result
        try:
            return classify(result)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            return QueryRejected(
                reason(f"the query must return an instant vector or a scalar: {error}")
            )

    async def vector(self, query: str, shared: Shared | None = None) -> Series | Reading:
        """Every series of an instant vector with its value: histogram buckets and
        category counts, which come as many series by design."""
        result = await self._result(query, shared)
        if isinstance(result, QueryFailed | QueryRejected):
            return result
        try:
            return [(dict(item["metric"]), float(item["value"][1])) for item in result]
        except (TypeError, KeyError, IndexError, ValueError) as error:
            return QueryRejected(reason(f"the query must return an instant vector: {error}"))

    async def series(
        self, query: str, start: datetime, end: datetime, step: str
    ) -> list[float] | Reading:
        """The points of exactly one series over [start, end], or why there are none."""
        params = {
            "query": query,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": step,
        }
        result = await self._ask("/api/v1/query_range", params)
        if isinstance(result, QueryFailed | QueryRejected):
            return result
        if not result:
            return NoData("empty")
        if len(result) > 1:
            return NoData("multiple-series")
        try:
            points = [float(value) for _, value in result[0].get("values", [])]
        except (TypeError, ValueError, AttributeError) as error:
            return QueryRejected(reason(f"the query must return a range vector: {error}"))
        return [p for p in points if math.isfinite(p)]

    def close(self) -> None:
        self._session.close()


def _cause(error: BaseException) -> str:
    """The innermost cause's class and words: `ConnectionRefusedError: ...`, not the
    wrapper chain requests builds around it."""
    while error.__context__ is not None and isinstance(error, requests.RequestException):
        error = error.__context__
    return f"{type(error).__name__}: {error}"
